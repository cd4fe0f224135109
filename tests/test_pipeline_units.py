"""The pipeline's pieces without a runner: config, planning and reading, packing, the model handler."""

import gzip
import json
import os

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from fixtures_models import make_texts  # noqa: E402

from pipelines.config import ConfigError, PipelineConfig  # noqa: E402
from pipelines.packing import Packer, load_tokenizer, resolve_bos, resolve_separator  # noqa: E402
from pipelines.sources import Doc, InputError, expand_inputs, plan_units, read_unit, source_fingerprint  # noqa: E402

# -- config -------------------------------------------------------------------------------------


def test_config_yaml_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "inputs: [a.jsonl]\nteacher: t\noutput: o\nseq_len: 128\ntop_p: 1\ncodec: compact\ncodec_params: {step: 0.125}\n"
    )
    c = PipelineConfig.from_yaml(str(p))
    assert c.seq_len == 128 and c.top_p == 1.0 and c.tokenizer_uri == "t" and c.codec_params == {"step": 0.125}
    with pytest.raises(ConfigError, match="unknown key 'seq_length'"):
        PipelineConfig.from_dict({"seq_length": 3})
    with pytest.raises(ConfigError, match="key 'top_k' has the wrong type str"):
        PipelineConfig.from_dict({"top_k": "100"})
    with pytest.raises(ConfigError, match="setting 'top_p'"):
        PipelineConfig.from_dict({"top_p": 1.5})
    with pytest.raises(ConfigError, match="setting 'codec'"):
        PipelineConfig.from_dict({"codec": "nope"})
    with pytest.raises(ConfigError, match=r"setting 'codec'.*bad parameters for codec 'compact4'"):
        PipelineConfig.from_dict({"codec_params": {"step": 0.125}})  # compact's parameter, compact4's default
    assert PipelineConfig().codec == "compact4"
    with pytest.raises(ConfigError, match="setting 'teacher' is required"):
        PipelineConfig(inputs=["x"], output="o").require_io()


def test_cli_flags_override_yaml(tmp_path):
    from pipelines.cli import config_from_args, parser

    p = tmp_path / "c.yaml"
    p.write_text("inputs: [a.jsonl]\nteacher: t\noutput: o\nseq_len: 128\nadd_bos: true\n")
    args, extra = parser().parse_known_args(
        [
            "--config",
            str(p),
            "--seq-len",
            "64",
            "--no-add-bos",
            "--input",
            "b.jsonl,c.jsonl",
            "--separator",
            "0",
            "--direct_running_mode=multi_processing",
            "--project=x",
        ]
    )
    c = config_from_args(args)
    assert (c.seq_len, c.add_bos, c.inputs, c.separator) == (64, False, ["b.jsonl", "c.jsonl"], "0")
    assert extra == ["--direct_running_mode=multi_processing", "--project=x"]  # passed through to Beam


def test_settings_fingerprint_covers_shaping_settings_only():
    base = PipelineConfig(inputs=["a"], teacher="t", output="o")
    fp = base.settings_fingerprint({"source": "x"})
    assert (
        base.replace(batch_size=99, runner="DataflowRunner", output="elsewhere").settings_fingerprint({"source": "x"})
        == fp
    )
    for change in ({"top_k": 50}, {"seq_len": 64}, {"codec": "exact"}, {"add_bos": True}, {"separator": 3}):
        assert base.replace(**change).settings_fingerprint({"source": "x"}) != fp, change
    assert base.settings_fingerprint({"source": "y"}) != fp


def test_make_options_direct_flags():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from pipelines.job import make_options

    c = PipelineConfig(direct_running_mode="multi_processing", direct_num_workers=2)
    opts = make_options(c, ["--job_name=x"])
    assert opts.view_as(StandardOptions).runner == "DirectRunner"
    d = opts.view_as(DirectOptions)
    assert (d.direct_running_mode, d.direct_num_workers) == ("multi_processing", 2)


# -- sources ------------------------------------------------------------------------------------


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts)))


def test_byte_ranges_partition_lines(tmp_path):
    texts = make_texts(40, seed=3)
    _jsonl(tmp_path / "a.jsonl", texts)
    files = expand_inputs([str(tmp_path / "*.jsonl")])
    for size in (1, 7, 100, 333, 10_000):
        units = plan_units(files, 10, size)
        assert [u.name for u in units] == sorted(u.name for u in units)
        got = [d.text for u in units for d in read_unit(u, "text")]
        assert got == texts, size


def test_formats_and_planning(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    texts = make_texts(12, seed=4)
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet", row_group_size=4)
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    (tmp_path / "t.txt").write_text("one whole document\nwith two lines")
    files = expand_inputs([str(tmp_path)])  # a folder: every file under it
    assert [os.path.basename(f.uri) for f in files] == ["g.jsonl.gz", "p.parquet", "t.txt", "z.jsonl.zst"]
    units = plan_units(files, rows_per_unit=8, bytes_per_unit=50)
    assert [(u.name, u.start, u.end) for u in units if u.fmt == "parquet"] == [
        (
            "u00001-00000",
            0,
            2,
        ),
        ("u00001-00001", 2, 3),
    ]
    by_file = {}
    for u in units:
        by_file.setdefault(os.path.basename(u.uri), []).extend(read_unit(u, "text"))
    assert [d.text for d in by_file["p.parquet"]] == texts
    assert [d.position for d in by_file["p.parquet"]][8] == {"row": 8}
    assert [d.text for d in by_file["g.jsonl.gz"]] == texts == [d.text for d in by_file["z.jsonl.zst"]]
    assert by_file["g.jsonl.gz"][1].position["line"] == 2
    assert [d.text for d in by_file["t.txt"]] == ["one whole document\nwith two lines"]
    fp = source_fingerprint(files)
    assert fp == source_fingerprint(expand_inputs([str(tmp_path / "*")]))
    (tmp_path / "t.txt").write_text("changed")
    assert fp != source_fingerprint(expand_inputs([str(tmp_path)]))


def test_missing_input_fails_fast(tmp_path):
    with pytest.raises(InputError, match="nothing-here"):
        expand_inputs([str(tmp_path / "nothing-here" / "*.jsonl")])
    with pytest.raises(InputError, match="gone.jsonl"):
        expand_inputs([f"file://{tmp_path}/gone.jsonl"])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="unknown format"):
        expand_inputs([str(tmp_path / "x.csv")])


def test_dead_letter_kinds_in_jsonl(tmp_path):
    lines = [
        b'{"text": "good one"}',
        b'{"text": ',
        b'{"text": "bad \xff byte"}',
        b'{"other": 1}',
        b'{"text": ""}',
        b'{"text": null}',
        b'{"text": 5}',
        b"[1, 2]",
        b"   ",
        b'{"text": "good two"}',
    ]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (u,) = plan_units(expand_inputs([str(tmp_path / "a.jsonl")]), 1, 1 << 20)
    items = list(read_unit(u, "text"))
    assert [i.text for i in items if isinstance(i, Doc)] == ["good one", "good two"]
    dead = [i for i in items if not isinstance(i, Doc)]
    assert [d["kind"] for d in dead] == [
        "malformed_json",
        "not_utf8",
        "missing_text",
        "empty_text",
        "missing_text",
        "wrong_type",
        "malformed_json",
    ]
    offsets = np.cumsum([0] + [len(x) + 1 for x in lines])
    assert [d["position"]["byte"] for d in dead] == [int(offsets[i]) for i in (1, 2, 3, 4, 5, 6, 7)]
    assert all(d["file"] == u.uri and d["reason"] for d in dead)


# -- packing ------------------------------------------------------------------------------------


def test_packer_layout_and_trailing_pad():
    p = Packer(seq_len=8, sep_id=0, bos_id=None)
    out = p.add([5, 6, 7]) + p.add(list(range(10, 20))) + p.add([30])
    out += p.finish()
    stream = [5, 6, 7, 0] + list(range(10, 20)) + [0] + [30, 0]
    assert [n for _, n, _ in out] == [8, 8, 1]
    assert np.concatenate([t[:n] for t, n, _ in out]).tolist() == stream[:17]
    # doc starts: doc0 at 0, doc1 at 4 (seq 0); doc2 at stream offset 15 -> seq 1 offset 7
    assert [s.tolist() for _, _, s in out] == [[0, 4], [7], []]
    t, n, _ = out[-1]
    assert n == 1 and t.tolist() == [0] + [0] * 7  # padded with the separator id


def test_tokenizer_bos_and_separator(tiny_teacher):
    tok = load_tokenizer(tiny_teacher)
    assert tok("river", add_special_tokens=True)["input_ids"][0] == tok.bos_token_id  # SmolLM2-like
    assert resolve_separator(tok, None) == tok.eos_token_id == 0
    assert resolve_separator(tok, "<|im_end|>") == tok.convert_tokens_to_ids("<|im_end|>")
    assert resolve_separator(tok, "2") == 2
    with pytest.raises(ValueError, match="outside"):
        resolve_separator(tok, 10_000)
    with pytest.raises(ValueError, match="not a token"):
        resolve_separator(tok, "<|nope|>")
    assert resolve_bos(tok, False) is None and resolve_bos(tok, True) == tok.bos_token_id


# -- teacher handler ----------------------------------------------------------------------------


def test_handler_forwards_inference_args_and_pads(tiny_teacher):
    from pipelines.packing import Packed
    from pipelines.teacher import TeacherModelHandler

    handler = TeacherModelHandler(
        PipelineConfig(teacher=tiny_teacher, top_p=0.9, top_k=8, batch_size=2, share_model=False)
    )
    runner = handler.load_model()
    seen = []
    real_forward = runner.model.forward

    def spy(*a, **kw):
        seen.append(sorted(kw))
        return real_forward(*a, **kw)

    runner.model.forward = spy
    tokens = np.arange(3, 11, dtype=np.int64)
    short_tokens = np.concatenate([tokens[:5], np.zeros(3, np.int64)])  # the same text, padded after 5
    batch = [
        Packed("u", 0, 0, tokens, 8, np.zeros(0, np.uint32)),
        Packed("u", 1, 1, short_tokens, 5, np.zeros(0, np.uint32)),
    ]
    out = handler.run_inference(batch, runner, {"use_cache": False, "output_attentions": False})
    assert seen and "output_attentions" in seen[0] and "use_cache" in seen[0]
    full, short = out[0].inference.kept, out[1].inference.kept
    assert full.num_positions == short.num_positions == 8
    assert short.counts[5:].tolist() == [0, 0, 0] and (short.counts[:5] > 0).all()
    # right padding does not change a real position (causal attention)
    np.testing.assert_array_equal(short.counts[:5], full.counts[:5])
    # the next-token column: a value where a next token exists, NaN from the last real token on
    nl_full, nl_short = out[0].inference.next_logp, out[1].inference.next_logp
    assert nl_full.shape == nl_short.shape == (8,) and nl_full.dtype == np.float32
    assert np.isfinite(nl_full[:7]).all() and np.isnan(nl_full[7]) and np.isnan(nl_short[4:]).all()
    np.testing.assert_allclose(nl_short[:4], nl_full[:4], atol=1e-5)


def test_vocab_check_fails_fast(tmp_path, tiny_teacher):
    from fixtures_models import build_tiny_llama

    from pipelines.teacher import TeacherError, inspect_teacher

    build_tiny_llama(str(tmp_path / "small"), vocab_size=100)
    with pytest.raises(TeacherError, match=r"logits over 100 ids .* has 320 tokens"):
        inspect_teacher(str(tmp_path / "small"), 320, tiny_teacher)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(TeacherError, match=f"teacher {tmp_path / 'empty'}: "):
        inspect_teacher(str(tmp_path / "empty"), 320, tiny_teacher)
    with pytest.raises(TeacherError, match="teacher .*nowhere: cannot read"):
        inspect_teacher(str(tmp_path / "nowhere"), 320, tiny_teacher)
    os.makedirs(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "config.json").write_text(open(os.path.join(tiny_teacher, "config.json")).read())
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TeacherError, match="model.safetensors is unreadable"):
        inspect_teacher(str(tmp_path / "corrupt"), 320, tiny_teacher)


def test_a_wrong_teacher_is_refused_with_the_reason_before_any_work(tmp_path, tiny_teacher):
    """Weights from another model, no config.json, an architecture transformers does not know:
    each named before the job starts, not as a `size mismatch` traceback from the first worker."""
    import json
    import shutil

    from pipelines.teacher import TeacherError, inspect_teacher

    def variant(name: str, **changes) -> str:
        d = tmp_path / name
        shutil.copytree(tiny_teacher, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **changes}))
        return str(d)

    wider = variant("wider", hidden_size=64)  # config.json of a wider sibling, weights of the tiny one
    with pytest.raises(
        TeacherError,
        match=r"tensor .* in model.safetensors has shape \[320, 32\] but config.json "
        r"makes it \[320, 64\]: weights and config.json are from different",
    ):
        inspect_teacher(wider, 320, tiny_teacher)
    with pytest.raises(TeacherError, match="cannot read its config.json .*model type `no_such_arch`"):
        inspect_teacher(variant("alien", model_type="no_such_arch"), 320, tiny_teacher)
    bare = variant("bare")
    os.remove(os.path.join(bare, "config.json"))
    with pytest.raises(TeacherError, match="no config.json in the checkpoint"):
        inspect_teacher(bare, 320, tiny_teacher)
    # a checkpoint of the base model alone (tensor names without the `model.` prefix) is the same model
    from safetensors.torch import load_file, save_file

    base = variant("base")
    tensors = load_file(os.path.join(base, "model.safetensors"))
    save_file(
        {k.removeprefix("model."): v.contiguous() for k, v in tensors.items()}, os.path.join(base, "model.safetensors")
    )
    assert inspect_teacher(base, 320, tiny_teacher).vocab_size == 320
