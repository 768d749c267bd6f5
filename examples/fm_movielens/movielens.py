"""MovieLens with Spark: read any of the three release formats, join, build the FM's features.

``read_movielens(spark, path)`` detects the format by file names:

    ml-100k    u.data (tab: user, item, rating, time)  + u.item (pipe: id|title|date|...|19 genre flags)
    ml-1m      ratings.dat (user::movie::rating::time)  + movies.dat (id::Title (Year)::G1|G2)
    ml-latest  ratings.csv (header userId,movieId,rating,timestamp) + movies.csv (movieId,title,genres)
    parquet    ratings.parquet (user_id, movie_id, rating, timestamp)
               + movies.parquet (movie_id, title, year, genres: list of names), as generate.py writes

A ratings file without a movies file (or pyspark's ``sample_movielens_ratings.txt``, a
``::``-separated ratings file) reads with no genres and no release year.

``id_vocabularies(ratings)`` numbers the raw ids: ``user_id -> user_idx`` and
``movie_id -> movie_idx``, 0..n-1 in id order. ``features(ratings, movies, vocabularies)`` returns
one row per rating with the model's inputs:

    user_idx      int          0..U-1, users in id order
    movie_idx     int          0..M-1, rated movies in id order
    genre_ids     array<int>   1..G (genres in name order); [0] when the movie has none
    year_idx      int          release year in 5-year buckets from 1915, 0 when unknown
    age_idx       int          years between release and rating, 1..(capped at 40)+1, 0 unknown
    weekday_idx   int          day of the week the rating was given, 0 = Monday
    rating        float        the label, 0.5..5
    timestamp     bigint       seconds since the epoch (used for the split, not a model input)

``split_by_time`` holds out each user's latest ratings (see its docstring); ``with_raw_ids`` puts
the raw ``user_id`` and ``movie_id`` back beside the indexes.
"""
from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

# ml-100k's u.item genre flag columns, in file order.
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]
NO_GENRE = ("(no genres listed)", "unknown", "")
FIRST_YEAR, YEAR_BUCKET, MAX_AGE = 1915, 5, 40
SAMPLE_FILE = "sample_movielens_ratings.txt"
INPUTS = ["user_idx", "movie_idx", "genre_ids", "year_idx", "age_idx", "weekday_idx"]


def detect_format(path: str) -> str:
    """``"parquet"``, ``"ml-100k"``, ``"ml-1m"``, ``"ml-latest"`` or ``"ratings-only"`` from the
    file names in ``path`` (Parquet first: it reads fastest when a directory holds both)."""
    if os.path.isfile(path):
        return "ratings-only"
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MovieLens data not found: {path}")
    names = set(os.listdir(path))
    for fmt, ratings in (("parquet", "ratings.parquet"), ("ml-100k", "u.data"), ("ml-1m", "ratings.dat"),
                         ("ml-latest", "ratings.csv")):
        if ratings in names:
            return fmt
    if SAMPLE_FILE in names:
        return "ratings-only"
    raise ValueError(f"{path} holds no MovieLens ratings file: expected u.data (ml-100k), "
                     f"ratings.dat (ml-1m), ratings.csv (ml-latest), ratings.parquet or {SAMPLE_FILE}; "
                     f"found {', '.join(sorted(names)) or 'nothing'}")


def _split_colons(spark: SparkSession, path: str, names: list, encoding: str = "ISO-8859-1"):
    # '::' is a multi-character separator the CSV reader refuses; split text lines instead.
    lines = spark.read.option("encoding", encoding).text(path)
    parts = F.split(F.col("value"), "::")
    return lines.select(*[parts.getItem(i).alias(n) for i, n in enumerate(names)])


def _typed_ratings(df: DataFrame) -> DataFrame:
    return df.select(F.col("user_id").cast("int"), F.col("movie_id").cast("int"),
                     F.col("rating").cast("float"), F.col("timestamp").cast("bigint"))


def _year_from_title(title):
    # Titles end in "(1995)"; some ml-latest ones have trailing spaces or no year. Four digits
    # always cast; no match is "", which becomes null here rather than through Column.try_cast
    # (Spark 4.0+; a plain cast of "" fails under Spark 4's ANSI mode).
    year = F.regexp_extract(F.trim(title), r"\((\d{4})\)$", 1)
    return F.when(year != "", year.cast("int"))


def read_movielens(spark: SparkSession, path: str):
    """``(ratings, movies)`` DataFrames in one schema whatever the release.

    ratings: user_id int, movie_id int, rating float, timestamp bigint.
    movies:  movie_id int, year int (null if unknown), genres array<string>; None if no movies file.
    """
    fmt = detect_format(path)
    movies = None
    if fmt == "parquet":
        ratings = _typed_ratings(spark.read.parquet(os.path.join(path, "ratings.parquet")))
        if os.path.exists(os.path.join(path, "movies.parquet")):
            raw = spark.read.parquet(os.path.join(path, "movies.parquet"))
            year = F.col("year").cast("int") if "year" in raw.columns else F.lit(None).cast("int")
            if "title" in raw.columns:
                year = F.coalesce(year, _year_from_title(F.col("title")))
            movies = raw.select(F.col("movie_id").cast("int"), year.alias("year"),
                                F.col("genres").cast("array<string>"))
    elif fmt == "ratings-only":
        file = path if os.path.isfile(path) else os.path.join(path, SAMPLE_FILE)
        ratings = _typed_ratings(_split_colons(spark, file, ["user_id", "movie_id", "rating", "timestamp"]))
    elif fmt == "ml-1m":
        ratings = _typed_ratings(_split_colons(spark, os.path.join(path, "ratings.dat"),
                                               ["user_id", "movie_id", "rating", "timestamp"]))
        if os.path.exists(os.path.join(path, "movies.dat")):
            raw = _split_colons(spark, os.path.join(path, "movies.dat"), ["movie_id", "title", "genres"])
            movies = raw.select(F.col("movie_id").cast("int"), _year_from_title(F.col("title")).alias("year"),
                                F.split("genres", r"\|").alias("genres"))
    elif fmt == "ml-100k":
        ratings = _typed_ratings(spark.read.csv(os.path.join(path, "u.data"), sep="\t",
                                                schema="user_id int, movie_id int, rating float, timestamp bigint"))
        if os.path.exists(os.path.join(path, "u.item")):
            flags = ", ".join(f"g{i} int" for i in range(len(ML100K_GENRES)))
            raw = spark.read.csv(os.path.join(path, "u.item"), sep="|", encoding="ISO-8859-1",
                                 schema=f"movie_id int, title string, release string, video string, "
                                        f"url string, {flags}")
            genres = F.filter(F.array(*[F.when(F.col(f"g{i}") == 1, F.lit(g))
                                        for i, g in enumerate(ML100K_GENRES)]), lambda g: g.isNotNull())
            year = F.coalesce(F.year(F.to_date("release", "dd-MMM-yyyy")), _year_from_title(F.col("title")))
            movies = raw.select("movie_id", year.alias("year"), genres.alias("genres"))
    else:
        ratings = _typed_ratings(spark.read.csv(os.path.join(path, "ratings.csv"), header=True)
                                 .withColumnRenamed("userId", "user_id").withColumnRenamed("movieId", "movie_id"))
        if os.path.exists(os.path.join(path, "movies.csv")):
            raw = spark.read.csv(os.path.join(path, "movies.csv"), header=True, quote='"', escape='"')
            movies = raw.select(F.col("movieId").cast("int").alias("movie_id"),
                                _year_from_title(F.col("title")).alias("year"),
                                F.split("genres", r"\|").alias("genres"))
    if movies is not None:
        movies = movies.withColumn("genres", F.filter("genres", lambda g: ~g.isin(*NO_GENRE)))
    return ratings, movies


def _contiguous(df: DataFrame, key: str, name: str) -> DataFrame:
    """``key -> name``: 0..n-1 in key order. The id table is small (users or movies), one partition is fine."""
    ids = df.select(key).distinct()
    return ids.withColumn(name, (F.row_number().over(Window.orderBy(key)) - 1).cast("int"))


def id_vocabularies(ratings: DataFrame) -> dict[str, DataFrame]:
    """``{"user": (user_id, user_idx), "movie": (movie_id, movie_idx)}``: every raw id of ``ratings``
    numbered 0..n-1 in id order. The model knows indexes only; these tables turn the ids a request
    carries into them, so they are saved with the model."""
    return {"user": _contiguous(ratings, "user_id", "user_idx"),
            "movie": _contiguous(ratings, "movie_id", "movie_idx")}


def features(ratings: DataFrame, movies: DataFrame | None,
             vocabularies: dict[str, DataFrame] | None = None) -> DataFrame:
    """One row per rating with the model's inputs, the label and the timestamp (see module doc).
    ``vocabularies`` (``id_vocabularies``'s) number the ids; by default ``ratings``' own."""
    ids = vocabularies or id_vocabularies(ratings)
    df = ratings.join(F.broadcast(ids["user"]), "user_id").join(F.broadcast(ids["movie"]), "movie_id")
    if movies is not None:
        vocab = (movies.select(F.explode("genres").alias("genre")).distinct()
                 .withColumn("genre_id", F.row_number().over(Window.orderBy("genre")).cast("int")))
        movie_genres = (movies.select("movie_id", F.explode_outer("genres").alias("genre"))
                        .join(F.broadcast(vocab), "genre", "left")
                        .groupBy("movie_id")
                        .agg(F.array_sort(F.collect_list("genre_id")).alias("genre_ids")))
        df = (df.join(F.broadcast(movies.select("movie_id", "year")), "movie_id", "left")
                .join(F.broadcast(movie_genres), "movie_id", "left"))
    else:
        df = df.withColumn("year", F.lit(None).cast("int")).withColumn("genre_ids", F.lit(None))
    genre_ids = F.coalesce(F.col("genre_ids").cast("array<int>"), F.array().cast("array<int>"))
    # Calendar fields in UTC whatever the session time zone: days since the epoch, not timestamps.
    day = F.floor(F.col("timestamp") / 86400).cast("int")
    age = F.year(F.date_from_unix_date(day)) - F.col("year")
    return df.select(
        "user_idx", "movie_idx",
        F.when(F.size(genre_ids) > 0, genre_ids).otherwise(F.array(F.lit(0))).alias("genre_ids"),
        # greatest/least skip nulls, so unknown years are mapped to 0 explicitly.
        F.when(F.col("year").isNull(), 0)
         .otherwise(F.floor((F.greatest("year", F.lit(FIRST_YEAR)) - FIRST_YEAR) / YEAR_BUCKET) + 1)
         .cast("int").alias("year_idx"),
        F.when(age.isNull(), 0).otherwise(F.least(F.greatest(age, F.lit(0)), F.lit(MAX_AGE)) + 1)
         .cast("int").alias("age_idx"),
        ((day + 3) % 7).cast("int").alias("weekday_idx"),          # 1970-01-01 was a Thursday
        F.col("rating").cast("float"), "timestamp")


def with_raw_ids(df: DataFrame, vocabularies: dict[str, DataFrame]) -> DataFrame:
    """``df`` plus the raw ``user_id`` and ``movie_id`` of its indexes (``id_vocabularies``'s
    tables). Broadcast joins: every row stays in its partition, in its place."""
    for name, vocab in vocabularies.items():
        df = df.join(F.broadcast(vocab), f"{name}_idx")
    return df


def mark_validation(df: DataFrame, validation_fraction: float = 0.1) -> DataFrame:
    """``df`` plus a boolean ``is_validation``: each user's latest ``validation_fraction`` of ratings.

    A per-user time split: the model is judged on predicting what a known user rates next, from
    their earlier ratings only. Every user keeps at least their one latest rating in validation;
    ties in time are broken by movie for a reproducible split.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    by_user = Window.partitionBy("user_idx")
    latest_first = by_user.orderBy(F.col("timestamp").desc(), F.col("movie_idx").desc())
    ranked = (df.withColumn("_n", F.count(F.lit(1)).over(by_user))
                .withColumn("_rank", F.row_number().over(latest_first)))
    held = F.col("_rank") <= F.greatest(F.lit(1), F.floor(F.col("_n") * validation_fraction))
    return ranked.withColumn("is_validation", held).drop("_n", "_rank")


def split_by_time(df: DataFrame, validation_fraction: float = 0.1):
    """``(train, validation)`` by :func:`mark_validation`."""
    marked = mark_validation(df, validation_fraction)
    return (marked.where(~F.col("is_validation")).drop("is_validation"),
            marked.where("is_validation").drop("is_validation"))


def vocabulary_sizes(df: DataFrame) -> dict:
    """Embedding rows each input needs (max index + 1), in one Spark pass."""
    return summarize(df)[0]


def summarize(df: DataFrame):
    """``(vocabulary sizes, mean training rating)`` in one Spark pass; rows flagged
    ``is_validation`` (if the column exists) count for the sizes but not for the mean."""
    train = ~F.col("is_validation") if "is_validation" in df.columns else F.lit(True)
    row = df.select(F.max("user_idx").alias("user_idx"), F.max("movie_idx").alias("movie_idx"),
                    F.max(F.array_max("genre_ids")).alias("genre_ids"), F.max("year_idx").alias("year_idx"),
                    F.max("age_idx").alias("age_idx"), F.max("weekday_idx").alias("weekday_idx"),
                    F.avg(F.when(train, F.col("rating"))).alias("mean")).first()
    return {k: int(row[k] or 0) + 1 for k in INPUTS}, float(row["mean"] or 0.0)
