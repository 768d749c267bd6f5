"""Synthetic Criteo click logs: TSV files in the Criteo format, labels from a planted teacher.

    python -m examples.ctr_criteo.generate --out /tmp/criteo-tiny --scale tiny [--seed 7]

Each line is what a Criteo display-ads log line holds, tab-separated, no header:

    label  I1 .. I13  C1 .. C26  tags

- ``label``: 1 clicked, 0 not;
- ``I1..I13``: integer counts, heavy-tailed (log-normal), ``I2`` sometimes negative (as in Criteo),
  each empty (missing) at about Criteo's rate for that column;
- ``C1..C26``: categorical values as 8-hex-digit hashes, ids Zipf-skewed within each field (a few
  values carry most rows, most values are seen once or twice), some fields often empty;
- ``tags`` (not in Criteo; a 41st column): 0 to 6 comma-separated tokens (``t17,t3``), empty
  for about 30% of rows. Files without it (real Criteo) read with no tags.

Fields with up to 1,000 values keep the cardinality of the Criteo Kaggle release; larger ones shrink
with the square root of the row count (Criteo's 45.8M rows hold 10.1M distinct C3 values; ``tiny``
draws C3 from 211k).

The label of a row is drawn from ``sigmoid(logit)``, where the teacher's logit sums

- a linear term in ``log1p(max(x, 0))`` of four counts (I1, I3, I6, I11; missing counts as 0);
- a weight per value of seven fields (C2, C3, C6, C9, C11, C14, C17; a missing value weighs 0);
- an interaction ``<u(C6), u(C17)>`` of rank-2 vectors per value (what a factorization machine or
  DeepFM models and a linear model cannot);
- the mean weight of the row's tags;

scaled to a standard deviation of 1.6 and shifted to a click rate of about 25% (Criteo's is 25.6%).
Everything the teacher uses is in the file, so its scores are the best any model of these columns
can do on average: ``teacher.json`` holds its AUC and log loss on the held-out rows.

Rows are written in ``days`` files, ``day_0.tsv`` .. ``day_9.tsv`` (as Criteo's 1TB release is
split by day); the last day is the held-out set the example validates on. The per-value weights are
drawn once from ``--seed``; each day's rows from ``(seed, day)``: same arguments, same bytes.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

INTS = [f"I{i}" for i in range(1, 14)]
CATS = [f"C{i}" for i in range(1, 27)]
LABEL, TAGS = "label", "tags"
COLUMNS = [LABEL, *INTS, *CATS, TAGS]

# Distinct values per field in the Criteo Kaggle release (45,840,617 rows).
CRITEO_ROWS = 45_840_617
CRITEO_CARDINALITY = [1460, 583, 10_131_227, 2_202_608, 305, 24, 12_517, 633, 3, 93_145, 5683,
                      8_351_593, 3194, 27, 14_992, 5_461_306, 10, 5652, 2173, 4, 7_046_547, 18, 15,
                      286_181, 105, 142_572]
# Share of empty values per column, about Criteo's.
INT_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22]
CAT_MISSING = {"C3": 0.03, "C4": 0.03, "C6": 0.12, "C12": 0.03, "C16": 0.03, "C19": 0.44, "C20": 0.44,
               "C21": 0.03, "C22": 0.76, "C24": 0.03, "C25": 0.44, "C26": 0.44}
# log-normal (mu, sigma) of each count before flooring: small counts dominate, a few are huge.
INT_SHAPE = [(0.8, 1.2), (2.0, 2.0), (2.0, 1.5), (1.5, 1.2), (7.5, 2.0), (3.5, 2.0), (1.5, 1.5),
             (2.5, 1.0), (3.5, 1.5), (0.3, 0.8), (1.0, 1.2), (0.3, 1.0), (1.5, 1.2)]
ZIPF = 1.1                      # P(value of rank k) ~ k^-ZIPF within a field
TAG_VOCAB, TAG_ZIPF, MAX_TAGS = 2000, 1.0, 6

# The teacher.
TEACHER_COUNTS = {"I1": 0.35, "I3": -0.25, "I6": 0.30, "I11": 0.40}     # per standardised log count
TEACHER_FIELDS = {"C2": 0.6, "C3": 0.4, "C6": 0.6, "C9": 0.4, "C11": 0.5, "C14": 0.5, "C17": 0.5}
TEACHER_PAIR, PAIR_RANK, PAIR_SCALE = ("C6", "C17"), 2, 0.6
TAG_SCALE = 0.8
LOGIT_STD, CLICK_RATE = 1.6, 0.25

SCALES = {"tiny": 20_000, "small": 1_000_000, "large": 10_000_000}
DAYS = 10


def cardinalities(rows: int) -> list[int]:
    """Distinct values each field draws from at ``rows`` rows (see the module docstring)."""
    shrink = min(1.0, (rows / CRITEO_ROWS) ** 0.5)
    return [c if c <= 1000 else max(1000, int(c * shrink)) for c in CRITEO_CARDINALITY]


class _Zipf:
    """Draws ranks 0..n-1 with P(k) ~ (k+1)^-a by inverting the cumulative distribution."""

    def __init__(self, n: int, a: float):
        cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -a)
        self.cdf = cdf / cdf[-1]

    def draw(self, rng, size) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(size)), len(self.cdf) - 1)


class Teacher:
    """The planted model: its parameters, and the logit of a block of rows."""

    def __init__(self, rows: int, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.cards = dict(zip(CATS, cardinalities(rows)))
        self.zipf = {c: _Zipf(n, ZIPF) for c, n in self.cards.items()}
        self.tag_zipf = _Zipf(TAG_VOCAB, TAG_ZIPF)
        # A value's hash is an odd-multiplier affine map of its id mod 2^32: distinct ids give
        # distinct strings, scattered like real hashes.
        self.hash_a = {c: int(rng.integers(1, 2**31)) * 2 + 1 for c in CATS}
        self.hash_b = {c: int(rng.integers(0, 2**32)) for c in CATS}
        self.weights = {c: rng.normal(0.0, s, self.cards[c]) for c, s in TEACHER_FIELDS.items()}
        self.pair = {c: rng.normal(0.0, PAIR_SCALE, (self.cards[c], PAIR_RANK)) for c in TEACHER_PAIR}
        self.tag_weights = rng.normal(0.0, TAG_SCALE, TAG_VOCAB)
        self.count_weights = TEACHER_COUNTS
        # Standardisation of the log counts and of the raw logit, and the intercept: fixed from a
        # calibration sample, so every day file uses the same teacher.
        sample = self.draw_block(np.random.default_rng([seed, 1]), 50_000)
        logs = {c: self._log_count(sample[c]) for c in TEACHER_COUNTS}
        self.count_mean = {c: float(v.mean()) for c, v in logs.items()}
        self.count_std = {c: float(v.std()) or 1.0 for c, v in logs.items()}
        raw = self.raw_logit(sample)
        self.raw_mean, self.raw_std = float(raw.mean()), float(raw.std())
        z = (raw - self.raw_mean) / self.raw_std * LOGIT_STD
        lo, hi = -10.0, 10.0
        for _ in range(60):            # the intercept giving CLICK_RATE on the sample
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _sigmoid(z + mid).mean() < CLICK_RATE else (lo, mid)
        self.intercept = (lo + hi) / 2

    @staticmethod
    def _log_count(values: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(np.nan_to_num(values, nan=0.0), 0.0))

    def draw_block(self, rng, n: int) -> dict:
        """``n`` rows of features (no label): counts as float with NaN for missing, categorical
        fields as int ids with -1 for missing, tags as a list of id arrays."""
        block = {}
        for c, missing, (mu, sigma) in zip(INTS, INT_MISSING, INT_SHAPE):
            v = np.floor(rng.lognormal(mu, sigma, n))
            if c == "I2":                      # Criteo's I2 goes down to -3
                v = np.where(rng.random(n) < 0.05, -rng.integers(1, 4, n), v)
            v[rng.random(n) < missing] = np.nan
            block[c] = v
        for c in CATS:
            ids = self.zipf[c].draw(rng, n).astype(np.int64)
            ids[rng.random(n) < CAT_MISSING.get(c, 0.0)] = -1
            block[c] = ids
        counts = np.minimum(rng.poisson(1.2, n), MAX_TAGS)
        flat = self.tag_zipf.draw(rng, int(counts.sum()))
        block[TAGS] = np.split(flat, np.cumsum(counts)[:-1])
        return block

    def raw_logit(self, block: dict) -> np.ndarray:
        n = len(block["I1"])
        logit = np.zeros(n)
        for c, w in self.count_weights.items():
            logit += w * (self._log_count(block[c]) - self.count_mean[c]) / self.count_std[c]
        for c, w in self.weights.items():
            ids = block[c]
            logit += np.where(ids >= 0, w[np.maximum(ids, 0)], 0.0)
        a, b = (np.where(block[c][:, None] >= 0, self.pair[c][np.maximum(block[c], 0)], 0.0)
                for c in TEACHER_PAIR)
        logit += (a * b).sum(1)
        logit += np.array([self.tag_weights[t].mean() if len(t) else 0.0 for t in block[TAGS]])
        return logit

    def probability(self, block: dict) -> np.ndarray:
        z = (self.raw_logit(block) - self.raw_mean) / self.raw_std * LOGIT_STD
        return _sigmoid(z + self.intercept)

    def hashes(self, c: str, ids: np.ndarray) -> np.ndarray:
        """8-hex-digit strings of field ``c``'s ids (None where missing)."""
        h = (ids.astype(np.uint64) * np.uint64(self.hash_a[c]) + np.uint64(self.hash_b[c])) & np.uint64(0xFFFFFFFF)
        text = np.char.mod("%08x", h).astype(object)
        text[ids < 0] = None
        return text


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def auc(labels, scores) -> float:
    """ROC AUC by ranks (Mann-Whitney), ties averaged."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, np.float64).ravel()
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1, counts)
    pos = labels.sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * (len(labels) - pos)))


def logloss(labels, p) -> float:
    y = np.asarray(labels, np.float64).ravel()
    p = np.clip(np.asarray(p, np.float64).ravel(), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _write_day(path: str, teacher: Teacher, block: dict, labels: np.ndarray) -> None:
    import pandas as pd

    frame = {LABEL: labels.astype(np.int64)}
    for c in INTS:
        frame[c] = pd.array(block[c], dtype="Int64")          # NaN -> an empty field
    for c in CATS:
        frame[c] = teacher.hashes(c, block[c])
    frame[TAGS] = [",".join(f"t{t}" for t in tags) for tags in block[TAGS]]
    pd.DataFrame(frame, columns=COLUMNS).to_csv(path, sep="\t", header=False, index=False, na_rep="",
                                                quoting=csv.QUOTE_NONE)


def generate(out: str, scale: str = "tiny", seed: int = 7, days: int = DAYS) -> dict:
    """Write ``days`` day files and ``teacher.json`` into ``out``; returns teacher.json's contents."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    rows = SCALES[scale]
    os.makedirs(out, exist_ok=True)
    teacher = Teacher(rows, seed)
    per_day = np.full(days, rows // days)
    per_day[: rows % days] += 1
    clicks = 0
    for day, n in enumerate(per_day):
        rng = np.random.default_rng([seed, 2, day])
        block = teacher.draw_block(rng, int(n))
        p = teacher.probability(block)
        labels = (rng.random(int(n)) < p).astype(np.int64)
        clicks += int(labels.sum())
        _write_day(os.path.join(out, f"day_{day}.tsv"), teacher, block, labels)
    # The last day is the held-out set: the teacher scored on it, and a constant click rate.
    rate = float(labels.mean())
    info = {"scale": scale, "seed": seed, "rows": rows, "days": days,
            "validation_file": f"day_{days - 1}.tsv", "validation_rows": int(per_day[-1]),
            "click_rate": clicks / rows, "teacher_auc": auc(labels, p), "teacher_logloss": logloss(labels, p),
            "constant_logloss": logloss(labels, np.full(len(labels), rate)),
            "cardinalities": dict(zip(CATS, cardinalities(rows)))}
    with open(os.path.join(out, "teacher.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write day_N.tsv and teacher.json into")
    parser.add_argument("--scale", default="tiny", choices=list(SCALES),
                        help=", ".join(f"{k}: {v:,} rows" for k, v in SCALES.items()))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=DAYS, help="files to split the rows into; the last is held out")
    args = parser.parse_args(argv)
    info = generate(args.out, args.scale, args.seed, args.days)
    print(f"wrote {info['rows']:,} rows in {info['days']} files to {args.out} (click rate "
          f"{info['click_rate']:.3f}); teacher on the held-out {info['validation_file']} "
          f"({info['validation_rows']:,} rows): AUC {info['teacher_auc']:.4f}, log loss "
          f"{info['teacher_logloss']:.4f} (constant {info['constant_logloss']:.4f})")


if __name__ == "__main__":
    main()
