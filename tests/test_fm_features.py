"""The MovieLens example's Spark feature engineering on tiny fixed inputs (in-process local Spark),
and its data generator."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "fm_movielens"))

import generate  # noqa: E402
from conftest import spark_with  # noqa: E402
import movielens  # noqa: E402

DAY = 86400
Y2000, Y2001 = 946684800, 978307200          # 2000-01-01 (Saturday), 2001-01-01 (Monday), UTC
RATINGS = [(5, 10, 4, Y2000), (5, 20, 3, Y2000 + DAY), (5, 30, 5, Y2000 + 2 * DAY),
           (7, 10, 2, Y2001), (9, 20, 1, Y2001 + 3 * DAY)]
# user_idx, movie_idx, genre_ids, year_idx, age_idx, weekday_idx, rating, timestamp
EXPECTED = [
    (0, 0, [2, 3], 17, 6, 5, 4.0, Y2000),            # Alpha (1995): Comedy|Drama, rated at age 5
    (0, 1, [1], 18, 1, 6, 3.0, Y2000 + DAY),         # Beta (2001) rated in 2000: age clipped to 0
    (0, 2, [0], 0, 0, 0, 5.0, Y2000 + 2 * DAY),      # Gamma: no year, no genres
    (1, 0, [2, 3], 17, 7, 0, 2.0, Y2001),
    (2, 1, [1], 18, 1, 3, 1.0, Y2001 + 3 * DAY),
]


def write_ml1m(d):
    d.mkdir()
    (d / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in RATINGS))
    (d / "movies.dat").write_text("10::Alpha (1995)::Comedy|Drama\n20::Beta (2001)::Action\n"
                                  "30::Gamma::\n40::Unrated (1990)::Western\n", encoding="latin-1")
    return d


def write_ml100k(d):
    d.mkdir()
    (d / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in RATINGS))

    def item(mid, title, date, genres):
        flags = ["1" if g in genres else "0" for g in movielens.ML100K_GENRES]
        return "|".join([str(mid), title, date, "", "http://x/"] + flags) + "\n"
    (d / "u.item").write_text(item(10, "Alpha (1995)", "01-Jan-1995", {"Comedy", "Drama"})
                              + item(20, "Beta (2001)", "01-Jan-2001", {"Action"})
                              + item(30, "Gamma", "", {"unknown"})
                              + item(40, "Unrated (1990)", "01-Jan-1990", {"Western"}), encoding="latin-1")
    return d


def write_mllatest(d):
    d.mkdir()
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                   + "".join(f"{u},{m},{r:.1f},{t}\n" for u, m, r, t in RATINGS))
    (d / "movies.csv").write_text('movieId,title,genres\n10,"Alpha, The (1995)",Comedy|Drama\n'
                                  "20,Beta (2001),Action\n30,Gamma,(no genres listed)\n"
                                  "40,Unrated (1990),Western\n")
    return d


@pytest.fixture(scope="module")
def spark(local_spark):
    # The features must not depend on the session's time zone.
    yield from spark_with(local_spark, **{"spark.sql.shuffle.partitions": 2,
                                          "spark.sql.session.timeZone": "America/Los_Angeles"})


def rows(df):
    cols = movielens.INPUTS + ["rating", "timestamp"]
    return sorted(tuple(r[c] for c in cols) for r in df.select(*cols).collect())


@pytest.mark.parametrize("writer,fmt", [(write_ml1m, "ml-1m"), (write_ml100k, "ml-100k"),
                                        (write_mllatest, "ml-latest")])
def test_every_format_gives_the_exact_features(spark, tmp_path, writer, fmt):
    d = writer(tmp_path / fmt)
    assert movielens.detect_format(str(d)) == fmt
    ratings, movies = movielens.read_movielens(spark, str(d))
    feats = movielens.features(ratings, movies)
    assert rows(feats) == [tuple(e) for e in EXPECTED]
    assert movielens.vocabulary_sizes(feats) == {"user_idx": 3, "movie_idx": 3, "genre_ids": 4,
                                                 "year_idx": 19, "age_idx": 8, "weekday_idx": 7}


def test_split_holds_out_each_users_latest_ratings(spark, tmp_path):
    ratings, movies = movielens.read_movielens(spark, str(write_ml1m(tmp_path / "ml-1m")))
    train, validation = movielens.split_by_time(movielens.features(ratings, movies), 0.5)
    # user 0 has 3 ratings: floor(1.5) = 1 held out, its latest; users 1 and 2 keep their only one.
    assert [(r[0], r[1]) for r in rows(validation)] == [(0, 2), (1, 0), (2, 1)]
    assert [(r[0], r[1]) for r in rows(train)] == [(0, 0), (0, 1)]


def test_ratings_without_movies_have_no_genres_or_years(spark):
    import pyspark

    sample = os.path.join(os.path.dirname(pyspark.__file__), "data", "mllib", "als", movielens.SAMPLE_FILE)
    ratings, movies = movielens.read_movielens(spark, sample)
    assert movies is None
    feats = movielens.features(ratings, movies)
    assert feats.count() == 1501
    one = feats.where("user_idx = 0 AND movie_idx = 2").first()
    assert (one.genre_ids, one.year_idx, one.age_idx, one.rating) == ([0], 0, 0, 3.0)
    assert movielens.vocabulary_sizes(feats)["user_idx"] == 30


def test_unknown_directory_names_what_it_expects(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="expected u.data .*ml-100k.*ratings.dat.*notes.txt"):
        movielens.detect_format(str(tmp_path))


def test_generator_is_deterministic_and_shaped_like_movielens():
    r1, m1 = generate.generate("100k", seed=3)
    r2, _ = generate.generate("100k", seed=3)
    r3, _ = generate.generate("100k", seed=4)
    assert all(np.array_equal(r1[k], r2[k]) for k in r1)
    assert not np.array_equal(r1["score"], r3["score"])
    assert len(r1["user"]) == 100_000 and len(m1["movie"]) == 1682
    per_user = np.bincount(r1["user"])[1:]
    assert per_user.min() >= 20 and per_user.max() > 10 * np.median(per_user) / 2
    pairs = r1["user"].astype(np.int64) * 10**6 + r1["movie"]
    assert len(np.unique(pairs)) == len(pairs)                   # no movie rated twice by a user
    per_movie = np.sort(np.bincount(r1["movie"]))[::-1]
    assert per_movie[0] > 20 * np.median(per_movie[per_movie > 0])   # power-law popularity
    stars = generate._stars(r1["score"], half=False)
    assert set(np.unique(stars)) == {1, 2, 3, 4, 5} and 3.2 < stars.mean() < 3.9


def test_generated_files_read_back_in_each_format(spark, tmp_path):
    from pyspark.sql import functions as F

    ratings, movies = generate.generate("100k", seed=5)
    for fmt in generate.FORMATS:
        generate.write(str(tmp_path / fmt), ratings, movies, fmt)
        r, m = movielens.read_movielens(spark, str(tmp_path / fmt))
        got = r.agg(F.count(F.lit(1)), F.count_if(F.col("rating").isNull() | F.col("user_id").isNull())).first()
        assert tuple(got) == (100_000, 0), fmt
        assert tuple(m.agg(F.count(F.lit(1)), F.count_if(F.col("year").isNull() | (F.size("genres") == 0))).first()) \
            == (1682, 0), fmt
