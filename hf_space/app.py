"""The Hugging Face Space: the "Remove background" tab of `python -m ormbg.app` on the published ORMBG weights.

The Space runs this file (README.md's `app_file`). The weights are `ORMBG_CHECKPOINT` when it names a file beside
this one, else `ormbg.pth` from the Hub repo `ORMBG_REPO` (default schirrmacher/ormbg). The Space needs the
project's code: upload `datagen/` and `ormbg/` beside this file (see the project's docs/app.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from ormbg.app import Models, build_app


def weights() -> Path:
    local = Path(__file__).with_name(os.environ.get("ORMBG_CHECKPOINT", "ormbg.pth"))
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(os.environ.get("ORMBG_REPO", "schirrmacher/ormbg"), "ormbg.pth"))


checkpoint = weights()
demo = build_app(Models({checkpoint.name: checkpoint}, size_px=int(os.environ.get("ORMBG_SIZE", "1024"))), [])

if __name__ == "__main__":
    demo.launch()
