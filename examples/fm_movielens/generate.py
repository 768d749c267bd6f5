"""Synthetic MovieLens: ratings and movies as Parquet, or as files in the real release formats,
with the real data's shape.

    python -m examples.fm_movielens.generate --out /tmp/ml-1m --scale 1m [--format parquet] [--seed 7]

``--format parquet`` (the default) writes ``ratings.parquet`` (user_id int, movie_id int, rating
float, timestamp bigint) and ``movies.parquet`` (movie_id int, title string, year int, genres
list<string>); ``ml-100k``, ``ml-1m`` and ``ml-latest`` write the text files of those releases,
which the job reads the same way as the real ones.

What is modelled (see README.md for how it differs from the real data):

- item popularity follows a power law (a few blockbusters, a long tail), user activity is
  heavy-tailed with at least 20 ratings per user, as in ml-100k and ml-1m;
- every movie has 1-3 of the 18 MovieLens genres and a release year skewed to recent decades;
- a rating is ``global mean + user bias + item bias + user's taste for the movie's genres +
  a low-rank user x item term + noise``, rounded and clipped to 1..5 (half stars for ml-latest);
  popular movies get slightly higher biases, as in the real data;
- each user rates over an active period inside the data's time span, so a per-user time split
  holds out each user's latest ratings.

Everything is drawn from one ``numpy`` generator seeded by ``--seed``: same arguments, same bytes.
"""
from __future__ import annotations

import argparse
import csv
import os

import numpy as np

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]
# Relative genre frequency in ml-1m's movies.dat (Drama and Comedy dominate).
GENRE_WEIGHT = [503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471, 276, 492,
                143, 68]

# scale -> (users, movies, ratings, first and last rating time), after the real releases.
SCALES = {
    "100k": (943, 1682, 100_000, 874_724_710, 893_286_638),
    "1m": (6040, 3706, 1_000_000, 956_703_932, 1_046_454_590),
    "10m": (69_878, 10_677, 10_000_000, 789_652_009, 1_231_131_736),
}
# The text format of the real release of each scale (ml-latest's has half stars).
RELEASE_FORMAT = {"100k": "ml-100k", "1m": "ml-1m", "10m": "ml-latest"}
FORMATS = ("parquet", "ml-100k", "ml-1m", "ml-latest")


def _user_activity(rng, users: int, ratings: int, movies: int) -> np.ndarray:
    """Ratings per user: at least 20, lognormal tail, at most 60% of the movies, summing to ``ratings``."""
    raw = rng.lognormal(mean=0.0, sigma=1.1, size=users)
    cap = int(movies * 0.6)
    counts = np.minimum(20 + np.floor(raw / raw.sum() * (ratings - 20 * users)).astype(np.int64), cap)
    while counts.sum() < ratings:       # hand what the cap cut off to users below it
        open_ = np.flatnonzero(counts < cap)
        pick = rng.choice(open_, size=min(len(open_), int(ratings - counts.sum())), replace=False)
        counts[pick] += 1
    return counts


def _popularity(rng, movies: int) -> np.ndarray:
    """Sampling weight per movie: a power law over a random popularity rank."""
    rank = rng.permutation(movies) + 1
    return (rank + 15.0) ** -1.05


def generate(scale: str = "1m", seed: int = 7, dim: int = 6):
    """Draw the data set in memory: ``(ratings, movies)``.

    ``ratings`` is a dict of arrays ``user, movie, rating, timestamp`` (ids as in the files);
    ``movies`` a dict of ``movie, year, genres`` (genres: list of index lists into ``GENRES``).
    """
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    users, movies, total, t0, t1 = SCALES[scale]
    rng = np.random.default_rng(seed)

    # Movies: sparse ids as in the real files, genres, release years.
    movie_ids = np.sort(rng.choice(int(movies * 1.07), size=movies, replace=False) + 1)
    gp = np.asarray(GENRE_WEIGHT, float) / sum(GENRE_WEIGHT)
    n_genres = rng.choice([1, 2, 3], size=movies, p=[0.5, 0.35, 0.15])
    movie_genres = [sorted(rng.choice(len(GENRES), size=k, replace=False, p=gp).tolist())
                    for k in n_genres]
    last_year = 1970 + t0 // 31_556_952        # nothing is released after the ratings start
    years = np.clip(np.round(last_year - rng.gamma(1.6, 9.0, size=movies)), 1919, last_year).astype(int)

    # Latent structure: genre tastes, low-rank residual, biases.
    pop = _popularity(rng, movies)
    item_bias = rng.normal(0.0, 0.35, movies) + 0.18 * (np.log(pop) - np.log(pop).mean()) / np.log(pop).std()
    user_bias = rng.normal(0.0, 0.38, users)
    taste = rng.normal(0.0, 0.45, (users, len(GENRES)))
    genre_matrix = np.zeros((movies, len(GENRES)))
    for m, gs in enumerate(movie_genres):
        genre_matrix[m, gs] = 1.0 / len(gs)
    p_user = rng.normal(0.0, 0.5, (users, dim))
    q_item = rng.normal(0.0, 0.5, (movies, dim))

    counts = _user_activity(rng, users, total, movies)
    log_pop = np.log(pop / pop.sum())
    start = t0 + (t1 - t0) * rng.beta(0.7, 2.5, users)
    span = np.minimum(rng.exponential((t1 - t0) * 0.15, users) + 86_400, t1 - start)

    u_out, m_out, r_out, ts_out = [], [], [], []
    for u in range(users):
        n = int(counts[u])
        # Gumbel top-k: n distinct movies drawn with probability proportional to popularity.
        keys = log_pop + rng.gumbel(size=movies)
        chosen = np.argpartition(-keys, n - 1)[:n]
        score = (3.38 + user_bias[u] + item_bias[chosen] + genre_matrix[chosen] @ taste[u]
                 + q_item[chosen] @ p_user[u] / np.sqrt(dim) + rng.normal(0.0, 0.85, n))
        times = np.sort(start[u] + span[u] * rng.random(n)).astype(np.int64)
        u_out.append(np.full(n, u + 1))
        m_out.append(movie_ids[chosen])
        r_out.append(score)
        ts_out.append(times)
    ratings = {"user": np.concatenate(u_out), "movie": np.concatenate(m_out),
               "score": np.concatenate(r_out), "timestamp": np.concatenate(ts_out)}
    return ratings, {"movie": movie_ids, "year": years, "genres": movie_genres}


def _stars(score: np.ndarray, half: bool) -> np.ndarray:
    if half:
        return np.clip(np.round(score * 2) / 2, 0.5, 5.0)
    return np.clip(np.round(score), 1, 5).astype(np.int64)


def write(out: str, ratings: dict, movies: dict, fmt: str, seed: int = 7,
          half_stars: bool | None = None) -> list[str]:
    """Write the files of format ``fmt`` into ``out``; returns their paths. ``half_stars``:
    ratings in half stars (0.5..5) rather than whole ones (1..5); by default only ml-latest has them."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    os.makedirs(out, exist_ok=True)
    order = np.random.default_rng(seed + 1).permutation(len(ratings["user"]))
    if fmt in ("ml-1m", "parquet"):     # the real ml-1m file is grouped by user
        order = order[np.argsort(ratings["user"][order], kind="stable")]
    stars = _stars(ratings["score"], half=fmt == "ml-latest" if half_stars is None else half_stars)
    titles = [f"Synthetic Movie {m}" for m in movies["movie"]]
    paths = []
    if fmt == "parquet":
        paths += _write_parquet(out, ratings, movies, order, stars, titles)
    elif fmt == "ml-1m":
        paths.append(os.path.join(out, "ratings.dat"))
        with open(paths[-1], "w", encoding="latin-1") as f:
            for i in order:
                f.write(f"{ratings['user'][i]}::{ratings['movie'][i]}::{stars[i]}::{ratings['timestamp'][i]}\n")
        paths.append(os.path.join(out, "movies.dat"))
        with open(paths[-1], "w", encoding="latin-1") as f:
            for m, t, y, gs in zip(movies["movie"], titles, movies["year"], movies["genres"]):
                f.write(f"{m}::{t} ({y})::{'|'.join(GENRES[g] for g in gs)}\n")
    elif fmt == "ml-100k":
        paths.append(os.path.join(out, "u.data"))
        with open(paths[-1], "w", encoding="latin-1") as f:
            for i in order:
                f.write(f"{ratings['user'][i]}\t{ratings['movie'][i]}\t{stars[i]}\t{ratings['timestamp'][i]}\n")
        paths.append(os.path.join(out, "u.item"))
        months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        with open(paths[-1], "w", encoding="latin-1") as f:
            for k, (m, t, y, gs) in enumerate(zip(movies["movie"], titles, movies["year"], movies["genres"])):
                flags = ["0"] + ["1" if g in gs else "0" for g in range(len(GENRES))]  # 'unknown' first
                date = f"01-{months[k % 12]}-{y}"
                f.write("|".join([str(m), f"{t} ({y})", date, "", "http://example.invalid/", *flags]) + "\n")
    else:
        paths.append(os.path.join(out, "ratings.csv"))
        with open(paths[-1], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["userId", "movieId", "rating", "timestamp"])
            for i in np.argsort(ratings["user"], kind="stable"):
                w.writerow([ratings["user"][i], ratings["movie"][i], f"{stars[i]:.1f}", ratings["timestamp"][i]])
        paths.append(os.path.join(out, "movies.csv"))
        with open(paths[-1], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["movieId", "title", "genres"])
            for m, t, y, gs in zip(movies["movie"], titles, movies["year"], movies["genres"]):
                w.writerow([m, f"{t}, The ({y})", "|".join(GENRES[g] for g in gs)])
    return paths


def _write_parquet(out: str, ratings: dict, movies: dict, order, stars, titles) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rated = pa.table({"user_id": pa.array(ratings["user"][order], pa.int32()),
                      "movie_id": pa.array(ratings["movie"][order], pa.int32()),
                      "rating": pa.array(np.asarray(stars[order], np.float32)),
                      "timestamp": pa.array(ratings["timestamp"][order], pa.int64())})
    catalog = pa.table({"movie_id": pa.array(movies["movie"], pa.int32()),
                        "title": pa.array([f"{t} ({y})" for t, y in zip(titles, movies["year"])]),
                        "year": pa.array(movies["year"], pa.int32()),
                        "genres": pa.array([[GENRES[g] for g in gs] for gs in movies["genres"]],
                                           pa.list_(pa.string()))})
    paths = [os.path.join(out, "ratings.parquet"), os.path.join(out, "movies.parquet")]
    pq.write_table(rated, paths[0])
    pq.write_table(catalog, paths[1])
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the files into")
    parser.add_argument("--scale", default="1m", choices=sorted(SCALES))
    parser.add_argument("--format", default="parquet", choices=FORMATS + ("release",),
                        help="parquet (the default), a release's text format, or release: the text "
                             "format of the real release of that scale (ml-100k for 100k, ml-1m for "
                             "1m, ml-latest for 10m)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    ratings, movies = generate(args.scale, args.seed)
    fmt = RELEASE_FORMAT[args.scale] if args.format == "release" else args.format
    paths = write(args.out, ratings, movies, fmt, args.seed,
                  half_stars=True if args.scale == "10m" else None)   # ml-10m has half stars too
    print(f"wrote {len(ratings['user'])} ratings of {len(set(ratings['user'].tolist()))} users on "
          f"{len(movies['movie'])} movies: {', '.join(paths)}")


if __name__ == "__main__":
    main()
