#!/usr/bin/env bash
# The oldest `datasets` that pyproject allows (3.4.0) in its own environment (.venv-oldest), against the tests that
# load a dataset directory with datasets.load_dataset(DIR). `.ci/run` calls it after `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-oldest
test -x $venv/bin/python || python3 -m venv $venv
$venv/bin/python -m pip install --quiet --upgrade pip
bash scripts/install_torch.sh $venv/bin/python
$venv/bin/python -m pip install --quiet -e ".[dev]" "datasets==3.4.0"
$venv/bin/python -c 'import datasets; print("datasets", datasets.__version__)'
HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 $venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_import.py tests/test_compose.py tests/test_hub.py -k "load_dataset or loads_with_datasets or valid_and_records or pull"
