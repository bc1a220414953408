"""Where a pushed dataset's Parquet shards are: a folder of them (what `datagen push --dry-run` stages) or a Hub
dataset (`hf://user/name`, read in place over HTTP ranges through huggingface_hub's file system). Listing, splits,
image columns and opening one shard, with one clear error where the Hub cannot be reached. Training and evaluation
read rows with `ormbg.parquet`, `datagen inspect` checks them; nothing here reads a row."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from datagen.errors import InputError
from datagen.records import HUB_SCHEME, HUB_SPLIT_NAMES


def hub_filesystem():
    """The fsspec file system that reads hf:// paths (huggingface_hub's; a test may give a local one)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def hub_failure(location: str, error: Exception):
    """The HubError to raise where reading `location` from the Hub failed with `error`."""
    from datagen.hub import HubError

    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return HubError(
        f"{location}: the Hub could not be read ({reason}). Check the network and the repo id, and the token for a "
        "private dataset (HF_TOKEN or `hf auth login`); or train from a local copy (`datagen pull`)"
    )


def split_of(name: str) -> str:
    """The split a Parquet file belongs to by its name: `train-00000-of-00004.parquet` (push, the Hub's data/ layout)
    or its folder (`default/train/0000.parquet`, the Hub's Parquet conversion); synonyms mapped (val -> validation)."""
    path = PurePosixPath(name)
    word = path.name.split("-")[0].split(".")[0] if "-" in path.name else path.parent.name
    return HUB_SPLIT_NAMES.get(word.lower(), word.lower())


def hub_repo(location: str) -> str:
    """`user/name` of `hf://user/name`; an InputError for anything else after the scheme."""
    repo = location[len(HUB_SCHEME) :].strip("/")
    if repo.count("/") != 1:
        raise InputError(f"{location}: expected hf://user/name")
    return repo


def list_shards(location: str, split: str) -> tuple[list[str], list[str]]:
    """(the split's Parquet files, sorted; every split found) of a folder or hf://user/name."""
    if location.startswith(HUB_SCHEME):
        repo = hub_repo(location)
        try:
            found = hub_filesystem().glob(f"datasets/{repo}/**/*.parquet")
        except Exception as error:
            from datagen.hub import is_hub_failure

            if is_hub_failure(error) or isinstance(error, FileNotFoundError):
                raise hub_failure(location, error) from error
            raise
        names = sorted(str(name) for name in found)
    else:
        names = sorted(str(name) for name in Path(location).rglob("*.parquet") if not name.name.startswith("."))
    return [name for name in names if split_of(name) == split], sorted({split_of(name) for name in names})


def shard_splits(location: str) -> list[str]:
    """The splits of the Parquet shards at `location` (a folder or hf://user/name), by their files' names."""
    return list_shards(location, "")[1]


def shard_name(location: str, path: str) -> str:
    """A shard's path within the dataset (data/train-00000-of-00004.parquet), for messages."""
    posix = PurePosixPath(Path(path).as_posix())
    if location.startswith(HUB_SCHEME):
        repo, text = location[len(HUB_SCHEME) :].strip("/"), str(posix)
        return text.split(f"datasets/{repo}/", 1)[1] if f"datasets/{repo}/" in text else posix.name
    try:
        return str(posix.relative_to(Path(location).as_posix()))
    except ValueError:
        return posix.name


def image_columns(schema) -> list[str]:
    """Columns holding images as the datasets library writes them: struct<bytes, path>."""
    import pyarrow as pa

    return [
        f.name
        for f in schema
        if pa.types.is_struct(f.type) and "bytes" in [f.type.field(i).name for i in range(f.type.num_fields)]
    ]


def read_row_group(location: str, path: str, group: int, columns: list[str] | None = None):
    """Row group `group` of the shard `path` (local, or on hub_filesystem() for an hf:// location) as a pyarrow
    Table of `columns` (None: all); a Hub that cannot be reached is one HubError."""
    import pyarrow.parquet as pq

    hub = location.startswith(HUB_SCHEME) and not Path(path).is_file()
    try:
        if hub:
            with hub_filesystem().open(path, "rb") as file:
                return pq.ParquetFile(file).read_row_group(group, columns=columns)
        return pq.ParquetFile(path).read_row_group(group, columns=columns)
    except Exception as error:
        from datagen.hub import is_hub_failure

        if hub and is_hub_failure(error):
            raise hub_failure(location, error) from error
        raise


def shard_metadata(location: str, path: str, option: str):
    """(the Arrow schema, the Parquet metadata) of one shard, from its footer; errors name `option` and the shard."""
    import pyarrow.parquet as pq

    hub = location.startswith(HUB_SCHEME) and not Path(path).is_file()
    try:
        if hub:
            with hub_filesystem().open(path, "rb") as file:
                parquet = pq.ParquetFile(file)
        else:
            parquet = pq.ParquetFile(path)
    except Exception as error:
        from datagen.hub import is_hub_failure

        if hub and is_hub_failure(error):
            raise hub_failure(location, error) from error
        message = f"{option} {location}: {PurePosixPath(path).name} is not a readable Parquet file ({error})"
        raise InputError(message) from error
    return parquet.schema_arrow, parquet.metadata
