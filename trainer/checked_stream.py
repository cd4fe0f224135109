"""A streaming `Stream` that trusts nothing it fetches: shards are hash-checked and decompressed
here (each failure a `CorruptDataset` naming the shard), the index is the one the preflight checked,
and no file is written outside the stream's cache folder, whatever an index says.

Overrides private methods of mosaicml-streaming 0.13.0 (pinned); recheck them on an upgrade.
"""

from __future__ import annotations

import json
import os

from streaming import Stream
from streaming.base.compression import decompress
from streaming.base.format import get_index_basename
from streaming.base.hashing import get_hash

from schemas import PARTS_DIR, storage
from schemas.errors import ConfigError, CorruptDataset, zstd_errors
from schemas.redact import redact_uri
from schemas.shard_names import check_names


class CheckedStream(Stream):
    """A streaming `Stream` whose damaged shards raise `CorruptDataset`, naming the shard.

    Streaming itself reports a hash mismatch as a bare ``ValueError("Checksum failure ...")`` and a
    shard that does not decompress as the zstd binding's error. We read each fetched shard once,
    check its hash with streaming's own function and decompress it here, so a shard is hashed once
    (streaming would hash it a second time) and each failure has its type and the shard's name.
    It also keeps every file it writes inside its cache folder: the index streaming reads is the
    one the preflight checked and keyed the cache by (`index`, written here, never fetched again),
    its shard names are checked (`schemas.shard_names`) before any shard is fetched, and each path
    is checked against the cache folder where it is written (`_download_file`, decompression).
    Overrides private methods of mosaicml-streaming 0.13.0 (pinned); recheck on an upgrade."""

    def __init__(self, *, index: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    @property
    def root(self) -> str:
        """The folder this stream may write in: streaming's `<local>/<split>`."""
        return os.path.join(self.local, self.split)

    def inside(self, path: str, root: str, what: str, resolve: bool = True) -> str:
        """`path`, unless it lies outside `root` (CorruptDataset naming the dataset and path); with
        `resolve`, after following symbolic links (a link planted in the cache may not lead out)."""
        norm = os.path.realpath if resolve else (lambda p: os.path.normpath(os.path.abspath(p)))
        if os.path.commonpath([norm(root), norm(path)]) != norm(root):
            raise CorruptDataset(f"dataset {redact_uri(self.remote or '')}: {what} {path!r} is outside {root}; refused")
        return path

    def get_shards(self, world, allow_unsafe_types: bool) -> list:  # type: ignore[override]
        """streaming's index reading, over the preflight's index and after its names are checked."""
        filename = os.path.join(self.root, get_index_basename())
        if self.index is not None and world.is_local_leader and not os.path.exists(filename):
            os.makedirs(self.root, exist_ok=True)
            tmp = f"{filename}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(self.index, f)
            os.replace(tmp, filename)
        self.index = None  # written; not carried into DataLoader workers
        shards = super().get_shards(world, allow_unsafe_types)  # builds readers; reads no shard
        names = [
            {key: {"basename": info.basename} for key, info in zip(("raw_data", "zip_data"), pair) if info}
            for shard in shards
            for pair in shard.file_pairs
        ]
        check_names({"shards": names}, PARTS_DIR, where=f"dataset {redact_uri(self.remote or '')}: {filename}")
        return shards

    def _download_file(self, from_basename: str, to_basename: str | None = None) -> str:  # type: ignore[override]
        self.inside(os.path.join(self.root, to_basename or from_basename), self.root, "cache file")
        if self.remote and storage.is_local(self.remote):
            self.inside(
                os.path.join(self.remote, self.split, from_basename),
                os.path.join(self.remote, self.split),
                "shard file",
                resolve=False,
            )  # a dataset may link its shard files from elsewhere
        return super()._download_file(from_basename, to_basename)

    def _check_hash(self, info, data: bytes) -> None:
        algo = self.validate_hash
        if not algo:
            return
        if algo not in info.hashes:
            raise ConfigError(
                f"data.validate_hash: {algo!r} is not among the hashes the dataset {self.remote} "
                f"recorded for {info.basename} ({sorted(info.hashes)}); use one of those or null"
            )
        if get_hash(algo, data) != info.hashes[algo]:
            raise CorruptDataset(
                f"dataset {self.remote}: shard {info.basename} does not match the {algo} hash "
                "in the index (hash validation is on)"
            )

    def _decompress_shard_part(self, zip_info, zip_filename, raw_filename, compression):  # type: ignore[override]
        """streaming's own steps (read, validate, decompress, write beside, rename, maybe drop the
        zip), with our hash check in place of its second one."""
        with open(zip_filename, "rb") as fh:
            data = fh.read()
        self._check_hash(zip_info, data)
        try:
            data = decompress(compression, data)
        except zstd_errors() as e:
            raise CorruptDataset(f"dataset {self.remote}: shard {zip_info.basename} does not decompress ({e})") from e
        self.inside(raw_filename, self.root, "cache file")
        tmp_filename = raw_filename + ".tmp"
        with open(tmp_filename, "wb") as out:
            out.write(data)
        os.rename(tmp_filename, raw_filename)
        if not self.safe_keep_zip:
            os.remove(zip_filename)

    def _prepare_shard_part(self, raw_info, zip_info=None, compression=None) -> int:  # type: ignore[override]
        raw_filename = os.path.join(self.local, self.split, raw_info.basename)
        if zip_info is None and not os.path.isfile(raw_filename):
            # An uncompressed shard: fetch and check it here; streaming then finds it present and
            # does not hash it again.
            self._download_file(raw_info.basename)
            with open(raw_filename, "rb") as fh:
                self._check_hash(raw_info, fh.read())
            return raw_info.bytes + super()._prepare_shard_part(raw_info, zip_info, compression)
        return super()._prepare_shard_part(raw_info, zip_info, compression)
