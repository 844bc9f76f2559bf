"""Text corpora larger than memory: what the token cache costs to build, and what it saves.

Generates deterministic, varied text corpora (English-like words with accented letters, CJK
and emoji mixed in; files of up to 100 MB) of 10 MB, 100 MB and 1 GB in a temporary folder,
and measures each in fresh processes (``ru_maxrss`` is then the run's own), for the
``text_files`` dataset with the ``bytes`` encoder and a context of 256:

* ``prepare``: a first run: read and hash the files, tokenise them into the token file
  (``dataset.token_cache=true``, the default), cut the windows, read 1,000 of them;
* ``hit``: a later run on the same corpus: read and hash the files, map the token file;
* ``in memory``: ``dataset.token_cache=false``, int64 ids in memory (the path before the
  cache), up to ``--memory-max-mb`` (a 1 GB corpus would need about 10 GB);
* ``bpe``: a first run with ``encoder=bpe`` (2,048 ids): fit the BPE on the training split,
  streamed piece by piece, then tokenise into the token file (uint16), up to ``--bpe-max-mb``;

peak resident memory is shown above that of an empty run (the same imports, no corpus).
Then training throughput of genloom's Trainer on the 10 MB corpus, mapped against in memory
(4 layers, width 128, context 64, batch 12), interleaved, medians of ``--reps``.

    python benchmarks/text_data.py                     # 10 MB, 100 MB, 1 GB; 3 training reps
    python benchmarks/text_data.py --sizes-mb 10 100   # what fits a short session
    python benchmarks/text_data.py --quick             # 1 MB, 1 rep, few steps (smoke test)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from trainer_timing import peak_rss_mb, trainer_rate  # noqa: E402

BLOCK = 256
FILE_MB = 100
WORDS = (  # noqa: SIM905 - a sentence of words reads better than a list of strings
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will more can "
    "data model token window corpus memory train sample byte file text run cache map stream piece "
    "naïve café façade déjà vu Grüße straße smörgåsbord über 世界 東京 データ 🧵 🚀 — … « » "
    "alpha beta gamma delta epsilon zeta theta lambda sigma omega 0 1 2 3 42 1999 2026 3.14"
).split()
PUNCTUATION = [",", ".", ".\n", ".\n\n", ";", ":", "?", "!\n"]


def generate(folder: Path, megabytes: int, seed: int = 0) -> int:
    """Write ``megabytes`` of text in files of up to :data:`FILE_MB` MB; return the bytes written."""
    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS + PUNCTUATION, dtype=object)
    weights = np.concatenate([1 / np.arange(1, len(WORDS) + 1), np.full(len(PUNCTUATION), 0.08)])
    weights /= weights.sum()
    blocks = [" ".join(rng.choice(vocab, size=180_000, p=weights)).encode() for _ in range(16)]
    target, written, part = megabytes * 1_000_000, 0, 0
    folder.mkdir(parents=True, exist_ok=True)
    while written < target:
        with open(folder / f"part-{part:04d}.txt", "wb") as f:
            size = 0
            while size < FILE_MB * 1_000_000 and written + size < target:
                order = rng.permutation(len(blocks))
                for i in order[:4]:  # a section: a header and four blocks in a new order
                    chunk = f"\n\n§ {part}.{size} ({i})\n\n".encode() + blocks[i]
                    if len(chunk) > target - written - size:  # the end: cut on a character boundary
                        chunk = chunk[: target - written - size].decode("utf-8", "ignore").encode()
                    f.write(chunk)
                    size += len(chunk)
            written += size
        part += 1
    return written


# -- one measurement, in its own process ---------------------------------------------------


def child(mode: str, path: str, cache: str) -> None:
    import torch

    torch.set_num_threads(1)
    from genloom_text.bpe import BpeTokenizer
    from genloom_text.corpus import TextFiles
    from genloom_text.tokenizer import ByteTokenizer

    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    tokens = 0
    if mode != "empty":
        dataset = TextFiles(path=path, block_size=BLOCK, token_cache=mode != "memory", cache_dir=cache)
        encoder = ByteTokenizer()
        if mode == "bpe":  # as genloom train does: fit on the training split, then encode the splits
            encoder = BpeTokenizer(vocab_size=2048)
            encoder.fit(dataset.fitting_media())
        train, val = dataset.split("train", encoder), dataset.split("val", encoder)
        picks = torch.randint(len(train), (1000,), generator=torch.Generator().manual_seed(0))
        assert all(len(train[int(i)]["tokens"]) == BLOCK + 1 for i in picks) and len(val) > 0
        tokens = len(train.tokens)
    print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb(), "tokens": tokens,
                      **mapped_pages_mb()}))


def mapped_pages_mb() -> dict[str, float]:
    """Resident file pages (the token file's map, shared libraries) and anonymous memory now, MiB."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:  # not Linux
        return {}
    fields = dict(line.split(":", 1) for line in status if line.startswith(("RssFile", "RssAnon")))
    return {key: int(value.split()[0]) / 1024 for key, value in fields.items()}


def measure(mode: str, path: Path, cache: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(cache)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run on {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MODELS = {  # the Trainer's model for the throughput table; tiny for the smoke test
    "small": ["generator.n_layer=4", "generator.n_head=4", "generator.n_embd=128", "generator.block_size=64",
              "trainer.batch_size=12"],
    "tiny": ["generator.n_layer=1", "generator.n_head=2", "generator.n_embd=32", "generator.block_size=64",
             "trainer.batch_size=4"],
}


def train_child(mode: str, path: str, cache: str, steps: int, model: str) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    overrides = [
        "pipeline=text", "dataset=text_files", f"dataset.path={path}",
        f"dataset.token_cache={'true' if mode == 'cached' else 'false'}", f"dataset.cache_dir={cache}",
        *MODELS[model], "trainer.progress=false",
    ]
    rate = trainer_rate(overrides, warmup=10 if model == "tiny" else 20, steps=steps) * 64
    print(json.dumps({"tokens_per_s": rate}))


def train_rate(mode: str, path: Path, cache: Path, steps: int, model: str) -> float:
    command = [sys.executable, __file__, "--train-child", mode, str(path), str(cache), str(steps), model]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training on {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def rss(run: dict[str, float], empty: dict[str, float]) -> str:
    """Peak RSS above the empty run's, and the mapped file pages it holds beyond the empty run's."""
    if "RssFile" not in run:
        return f"{run['rss_mb'] - empty['rss_mb']:.0f}"
    return f"{run['rss_mb'] - empty['rss_mb']:.0f} ({run['RssFile'] - empty['RssFile']:.0f} file)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--memory-max-mb", type=int, default=100, help="largest corpus measured in memory")
    parser.add_argument("--bpe-max-mb", type=int, default=100, help="largest corpus fitted with BPE")
    parser.add_argument("--reps", type=int, default=3, help="training repetitions per contender")
    parser.add_argument("--steps", type=int, default=150, help="timed training steps per repetition")
    parser.add_argument("--train-mb", type=int, default=10, help="the corpus training is timed on")
    parser.add_argument("--workdir", default=None, help="where corpora are generated (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="1 MB, one repetition of 10 steps, a tiny model")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--train-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    if args.train_child:
        mode, path, cache, steps, model = args.train_child
        return train_child(mode, path, cache, int(steps), model)
    if args.quick:
        args.sizes_mb, args.reps, args.steps, args.train_mb = [1], 1, 10, 1
    model = "tiny" if args.quick else "small"

    root = Path(tempfile.mkdtemp(prefix="genloom-text-data-", dir=args.workdir))
    rows = []
    rates: dict[str, list[float]] = {}
    try:
        empty = measure("empty", root, root)
        for megabytes in args.sizes_mb:
            corpus, cache = root / f"corpus-{megabytes}", root / f"cache-{megabytes}"
            size = generate(corpus, megabytes)
            time.sleep(2.1)  # a file written in the last 2 s is not memoised (it may still be being written)
            prepare = measure("cached", corpus, cache)
            hit = measure("cached", corpus, cache)
            memory = measure("memory", corpus, cache) if megabytes <= args.memory_max_mb else None
            bpe = None
            if megabytes <= args.bpe_max_mb:  # a cache of its own: the bytes' token file is not its
                bpe = measure("bpe", corpus, root / f"bpe-cache-{megabytes}")
                shutil.rmtree(root / f"bpe-cache-{megabytes}")
            rows.append((size, prepare, hit, memory, bpe))
            if megabytes == args.train_mb:
                rates = {"cached": [], "memory": []}
                for _ in range(args.reps):
                    for mode in rates:
                        rates[mode].append(train_rate(mode, corpus, cache, args.steps, model))
            shutil.rmtree(corpus)
            shutil.rmtree(cache)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\ntext corpora, bytes encoder (bpe columns: encoder=bpe, 2,048 ids), context {BLOCK}, "
          f"{time.strftime('%Y-%m-%d')}; "
          f"peak RSS above an empty run's ({empty['rss_mb']:.0f} MiB), in brackets its file-backed "
          "pages at the end (libraries, maps) above the empty run's; fresh process each")
    print("| corpus | prepare s | prepare MB/s | prepare RSS MiB | later run s | later run RSS MiB "
          "| in memory s | in memory RSS MiB | bpe prepare s | bpe prepare MB/s | bpe prepare RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, prepare, hit, memory, bpe in rows:
        held = "not run | not run"
        if memory:
            held = f"{memory['seconds']:.2f} | {memory['rss_mb'] - empty['rss_mb']:.0f}"
        fitted = "not run | not run | not run"
        if bpe:
            fitted = f"{bpe['seconds']:.2f} | {size / 1e6 / bpe['seconds']:.1f} | {rss(bpe, empty)}"
        print(f"| {size / 1e6:,.0f} MB | {prepare['seconds']:.2f} | {size / 1e6 / prepare['seconds']:.0f} "
              f"| {rss(prepare, empty)} | {hit['seconds']:.2f} | {rss(hit, empty)} | {held} | {fitted} |")
    print("targets: preparation >= 50 MB/s; peak RSS at 1 GB < 1,536 MiB above the empty run")
    if rates:
        cached, memory = statistics.median(rates["cached"]), statistics.median(rates["memory"])
        print(f"\ntraining on {args.train_mb} MB (Trainer, {model} model: {' '.join(MODELS[model])}), "
              f"median of {args.reps}, interleaved")
        print("| token cache (mapped) tok/s | in memory tok/s | mapped / in memory |")
        print("|---|---|---|")
        print(f"| {cached:,.0f} | {memory:,.0f} | {cached / memory:.3f} |")
        print("target: mapped / in memory >= 0.97 (unchanged, within noise)")


if __name__ == "__main__":
    main()
