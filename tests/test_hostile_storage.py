"""What a dataset on storage cannot make pdistill do (issue 26, items 1, 6 and one of 9).

* A changed dataset at one path is never read from the shard cache of the dataset that was there
  before (the cache is keyed by the dataset's content identity), whatever the cache setting.
* A shard name in an index (the root one or a part's) that is not `parts/<unit>/<file>` (root) or a
  plain file name (part) is refused before any read, naming the index and the name; neither
  `inspect` nor `train` writes outside its cache folder, locally or from s3://.
* A shard damaged past its hash (`data.validate_hash: null`) stops training with one line naming
  the shard and the dataset.

Real systems: the Composer trainer through `pdistill train`'s entry point, StreamingDataset, and
the moto S3 server (tests/objectstore.py).
"""

from __future__ import annotations

import gc
import glob
import json
import os
import shutil
import tempfile

import pytest

pytest.importorskip("torch")
pytest.importorskip("composer")
pytest.importorskip("streaming")

from make_dataset import make_tokenizer, tiny_llama_config, write_dataset  # noqa: E402

N = 16


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The tiny word-level tokenizer, saved (`model.tokenizer`), and its object."""
    folder = tmp_path_factory.mktemp("tok") / "tok"
    return str(folder), make_tokenizer(str(folder))


def train_cfg(tok_dir: str, uri: str, samples: str, **data) -> dict:
    return {
        "data": {"streams": [{"uri": uri}], "batch_size": 4, "num_canonical_nodes": 1, "shuffle": False, **data},
        "model": {"hf_config": tiny_llama_config(), "tokenizer": tok_dir},
        "distill": {
            "mode": "offline",
            "kind": "forward_kl",
            "tau": 1.0,
            "chunk_size": 16,
            "alpha": {"name": "constant", "value": 0.5},
        },
        "optim": {"lr": 1e-3},
        "run": {
            "max_duration": "2ba",
            "device": "cpu",
            "seed": 5,
            "loggers": [],
            "eval_interval": "100ba",
            "save_interval": "100ba",
            "sample_log_dir": samples,
        },
    }


def pdistill_train(tmp_path, raw: dict) -> int:
    """`pdistill train CONFIG.yaml` in this process (the CLI's own entry point)."""
    import yaml

    from trainer.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    gc.collect()  # a finished run's StreamingDataset lets go of its cache folder
    return main([str(path)])


def logged_ids(folder) -> set[int]:
    ids: set[int] = set()
    for path in glob.glob(os.path.join(str(folder), "samples-rank*.jsonl")):
        with open(path) as f:
            for line in f:
                ids.update(json.loads(line)["sample_ids"])
    return ids


def files_under(folder) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(str(folder), "**"), recursive=True) if os.path.isfile(p))


# ------------------------------------------------------------------------------------------------
# item 1: a changed dataset is never read from an old cache


@pytest.mark.slow
@pytest.mark.parametrize(
    "cache, codec_b",
    [("default", "compact4"), ("default", "exact"), ("data.local_cache", "compact4"), ("stream local", "compact4")],
)
def test_a_changed_dataset_at_one_path_is_never_read_from_an_old_cache(tok, tmp_path, monkeypatch, cache, codec_b):
    """Train on A at path P; replace P with B (other samples; the same codec, or another); train
    again with the same config: the second run trains on B's samples (before: on A's without a
    word, or B, a valid dataset, refused as corrupt because A's shards were decoded with B's codec)."""
    tok_dir, tokenizer = tok
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the default cache root lives under it
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "ds"
    extra = {"default": {}, "data.local_cache": {"local_cache": str(tmp_path / "cache")}}.get(cache, {})
    raw = train_cfg(tok_dir, str(path), str(tmp_path / "samples"), **extra)
    if cache == "stream local":
        raw["data"]["streams"][0]["local"] = str(tmp_path / "mine")

    a = write_dataset(str(path), tokenizer, n_samples=N, units=1, seed=1, source="sha256:dataset-A")
    assert pdistill_train(tmp_path, raw) == 0
    assert logged_ids(tmp_path / "samples") <= set(a["sample_ids"])
    os.rename(tmp_path / "samples", tmp_path / "samples-a")

    shutil.rmtree(path)
    b = write_dataset(str(path), tokenizer, n_samples=N, units=1, seed=2, source="sha256:dataset-B", codec=codec_b)
    assert pdistill_train(tmp_path, raw) == 0
    seen = logged_ids(tmp_path / "samples")
    assert seen and seen <= set(b["sample_ids"]), "the second run read dataset A's shards from the cache"


def test_the_cache_key_is_the_datasets_content_and_location(tmp_path):
    """`DatasetDir.stream_args`: equal for equal location and content, different when either differs,
    and a stream's own `local` folder is keyed the same way (never used bare)."""
    from schemas import DatasetDir

    p = str(tmp_path / "ds")
    args = DatasetDir(p).stream_args(str(tmp_path / "c"), identity="sha256:aaaa")
    assert args == DatasetDir("file://" + p).stream_args(str(tmp_path / "c"), identity="sha256:aaaa")
    assert args["local"] != DatasetDir(p).stream_args(str(tmp_path / "c"), identity="sha256:bbbb")["local"]
    assert args["local"] != DatasetDir(p + "2").stream_args(str(tmp_path / "c"), identity="sha256:aaaa")["local"]
    mine = DatasetDir(p).stream_args(str(tmp_path / "c"), str(tmp_path / "mine"), identity="sha256:aaaa")["local"]
    assert os.path.dirname(mine) == str(tmp_path / "mine")


def test_help_says_what_the_cache_is():
    from trainer.config import DataConfig, StreamConfig

    local_cache = DataConfig.model_fields["local_cache"].description
    local = StreamConfig.model_fields["local"].description
    assert "temp dir per run" not in local_cache
    for text in (local_cache, local):
        assert "content" in text, text


# ------------------------------------------------------------------------------------------------
# item 6: no index can make pdistill read or write outside its dataset and cache folders


def escape_to(target) -> str:
    """A relative shard name that climbs to / from any folder and then down to `target`."""
    return "../" * 40 + str(target).lstrip("/")


def hostile_names(target) -> dict[str, str]:
    return {
        "climbs out": escape_to(target),
        "absolute": str(target),
        "climbs out of its part": "parts/u00000-00000/../../" + escape_to(target),
    }


def poison_root_index(ds, name: str) -> str:
    """Rename the raw (decompressed) file of the root index's last shard: its stored (zip) file is
    untouched, so every size and hash still matches, and streaming decompresses to `name`."""
    with open(os.path.join(ds, "index.json")) as f:
        index = json.load(f)
    index["shards"][-1]["raw_data"]["basename"] = name
    with open(os.path.join(ds, "index.json"), "w") as f:
        json.dump(index, f)
    return "index.json"


def poison_part_index(ds, name: str) -> str:
    """A part's own index names `name` (a plain file name belongs there)."""
    part = sorted(glob.glob(os.path.join(ds, "parts", "*", "index.json")))[-1]
    with open(part) as f:
        index = json.load(f)
    index["shards"][-1]["raw_data"]["basename"] = name
    with open(part, "w") as f:
        json.dump(index, f)
    return os.path.relpath(part, ds)


def run_inspect(capsys, uri: str) -> tuple[int, str]:
    from pdistill import inspect

    rc = inspect.main([uri])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("where", ["root", "part"])
@pytest.mark.parametrize("kind", ["climbs out", "absolute", "climbs out of its part"])
def test_inspect_refuses_a_shard_name_outside_the_dataset(tok, tmp_path, capsys, where, kind):
    _, tokenizer = tok
    ds, outside = str(tmp_path / "ds"), tmp_path / "outside"
    outside.mkdir()  # a folder the process may write in
    write_dataset(ds, tokenizer, n_samples=N, units=2)
    name = hostile_names(outside / "x.mds")[kind]
    index_file = (poison_root_index if where == "root" else poison_part_index)(ds, name)
    rc, text = run_inspect(capsys, ds)
    assert files_under(outside) == []
    assert rc == 1 and "NOT WHOLE" in text, text
    assert f"{index_file}: shard" in text and repr(name) in text, text
    assert "Traceback" not in text


@pytest.mark.parametrize("kind", ["climbs out", "absolute", "climbs out of its part"])
def test_train_refuses_a_shard_name_outside_the_dataset(tok, tmp_path, capsys, kind):
    tok_dir, tokenizer = tok
    ds, outside = str(tmp_path / "ds"), tmp_path / "outside"
    outside.mkdir()  # a folder the process may write in
    write_dataset(ds, tokenizer, n_samples=N, units=2)
    name = hostile_names(outside / "x.mds")[kind]
    poison_root_index(ds, name)
    raw = train_cfg(tok_dir, ds, str(tmp_path / "samples"), local_cache=str(tmp_path / "cache"))
    rc = pdistill_train(tmp_path, raw)
    err = capsys.readouterr().err
    assert files_under(outside) == []
    assert rc == 2 and "pdistill train: refused:" in err and "index.json" in err and repr(name) in err, err[-2000:]
    assert "Traceback" not in err


def put(uri: str, key: str, data: bytes) -> None:
    """Store `data` at exactly `<uri>/<key>` (an object store takes any key, `..` included)."""
    from schemas import storage

    fs, root = storage.fs_and_path(uri)
    fs.pipe(root.rstrip("/") + "/" + key, data)


@pytest.mark.parametrize("entry", ["raw_data", "zip_data"])
@pytest.mark.parametrize("kind", ["climbs out", "absolute"])
def test_an_s3_dataset_cannot_make_train_or_inspect_write_outside_the_cache(
    tok, tmp_path, capsys, s3_bucket, kind, entry
):
    """From s3://: the raw name of a zstd shard (its stored file untouched), or its stored name
    with an object stored at that key too: refused by name, nothing written outside."""
    tok_dir, tokenizer = tok
    local, outside = str(tmp_path / "ds"), tmp_path / "outside"
    outside.mkdir()
    write_dataset(local, tokenizer, n_samples=N, units=2)
    name = hostile_names(outside / "x.mds")[kind] + (".zstd" if entry == "zip_data" else "")
    shard = sorted(glob.glob(os.path.join(local, "parts", "*", "shard.*.mds.zstd")))[-1]
    with open(os.path.join(local, "index.json")) as f:
        index = json.load(f)
    index["shards"][-1][entry]["basename"] = name
    with open(os.path.join(local, "index.json"), "w") as f:
        json.dump(index, f)
    for path in files_under(local):
        put(s3_bucket, os.path.relpath(path, local), open(path, "rb").read())
    if entry == "zip_data":
        put(s3_bucket, name.lstrip("/"), open(shard, "rb").read())

    raw = train_cfg(tok_dir, s3_bucket, str(tmp_path / "samples"), local_cache=str(tmp_path / "cache"))
    rc_train = pdistill_train(tmp_path, raw)
    err = capsys.readouterr().err
    rc_inspect, text = run_inspect(capsys, s3_bucket)
    assert files_under(outside) == []
    assert rc_train == 2 and "pdistill train: refused:" in err and "index.json" in err and repr(name) in err, err
    assert "Traceback" not in err
    assert rc_inspect == 1 and "index.json: shard" in text and repr(name) in text, text


def test_a_cache_path_is_checked_where_it_is_written(tok, tmp_path):
    """Streaming reuses an index.json it finds in its cache folder: a hostile one planted there is
    refused by name before any shard is fetched, and a download to a path outside the folder is
    refused where it would be written."""
    from schemas.errors import CorruptDataset
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    _, tokenizer = tok
    ds, outside = str(tmp_path / "ds"), tmp_path / "outside"
    outside.mkdir()  # a folder the process may write in
    write_dataset(ds, tokenizer, n_samples=N, units=2)
    data, cache = DataConfig.of(ds, shuffle=False, validate_hash=None), str(tmp_path / "cache")
    stream = DistillDataset(data, batch_size=2, cache_dir=cache).streams[0]
    name = escape_to(outside / "x.mds")
    with pytest.raises(CorruptDataset, match="outside"):
        stream._download_file("index.json", name)

    planted = os.path.join(stream.local, "index.json")
    with open(planted) as f:
        index = json.load(f)
    index["shards"][0]["raw_data"]["basename"] = name
    with open(planted, "w") as f:
        json.dump(index, f)
    del stream
    gc.collect()
    with pytest.raises(CorruptDataset, match=r"index\.json: shard 0 names '(\.\./)+"):
        DistillDataset(data, batch_size=2, cache_dir=cache)
    assert files_under(outside) == []


# ------------------------------------------------------------------------------------------------
# item 9 (part): a shard damaged past its hash names itself


def test_a_damaged_shard_without_hash_validation_names_the_shard_and_dataset(tok, tmp_path, capsys):
    """data.validate_hash: null and an uncompressed shard whose teacher bytes were changed: the
    sample does not decode ("entropy block: data left over ...") and training stops with one line
    naming the dataset and the shard."""
    tok_dir, tokenizer = tok
    ds = tmp_path / "ds"
    write_dataset(str(ds), tokenizer, n_samples=N, units=2, compression=None, size_limit=1 << 10)
    shard = sorted(glob.glob(str(ds / "parts" / "u00001-00000" / "shard.*.mds")))[-1]
    damage_teacher_bytes(ds, shard)
    raw = train_cfg(
        tok_dir, str(ds), str(tmp_path / "samples"), validate_hash=None, local_cache=str(tmp_path / "cache")
    )
    raw["run"]["max_duration"] = "4ba"
    rc = pdistill_train(tmp_path, raw)
    err = capsys.readouterr().err
    rel = os.path.relpath(shard, ds)
    lines = [ln for ln in err.splitlines() if ln.startswith("pdistill train:")]
    assert rc == 2 and len(lines) == 1, err[-3000:]
    assert str(ds) in lines[0] and rel in lines[0] and "does not decode" in lines[0] and "left over" in lines[0], lines[
        0
    ]
    assert "Traceback" not in err


def damage_teacher_bytes(ds, shard: str) -> None:
    """Flip one bit of the last sample's entropy-coded teacher values in an uncompressed shard (the
    first flip that leaves "data left over"): still a valid MDS file, only the hash tells."""
    from streaming.base.format.mds.reader import MDSReader

    from schemas import DatasetDir, decode_dense
    from schemas.errors import CodecError

    manifest = DatasetDir(str(ds)).read_manifest()
    codec = DatasetDir(str(ds)).stored_codec(manifest)
    part = os.path.dirname(shard)
    with open(os.path.join(part, "index.json")) as f:
        info = next(s for s in json.load(f)["shards"] if s["raw_data"]["basename"] == os.path.basename(shard))
    reader = MDSReader.from_json(part, None, info)
    raw = reader.get_item(reader.samples - 1)
    blob = raw["teacher_values"]
    with open(shard, "rb") as f:
        data = f.read()
    at = data.index(blob)
    for pos in range(len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= 1
        try:
            decode_dense({**raw, "teacher_values": bytes(damaged)}, codec, manifest.truncation.top_k)
        except CodecError as e:
            if "left over" in str(e):
                with open(shard, "wb") as f:
                    f.write(data[:at] + bytes(damaged) + data[at + len(blob) :])
                return
    raise AssertionError("no one-bit flip leaves data over")
