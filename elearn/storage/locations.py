"""What a location is: a local path on the driver's host, a ``file://`` mount every host sees, or
a remote URI served through ``pyarrow.fs`` -- parsed once, made absolute where local, refused with
the fix where elearn cannot use it (an unknown scheme, credentials written into the URI)."""
from __future__ import annotations

import os
import posixpath
import urllib.parse
from dataclasses import dataclass

from elearn.errors import StorageError

__all__ = ["Location", "parse_location", "SUPPORTED_SCHEMES", "redact", "clean_rel"]

# URI scheme as users write it -> the scheme pyarrow is given. s3a:// is what Spark and Hadoop
# users write for S3; gcs:// is accepted by pyarrow as a synonym of gs://.
_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "hdfs": "hdfs", "viewfs": "viewfs",
            "abfs": "abfs", "abfss": "abfss", "file": "file"}
SUPPORTED_SCHEMES = tuple(_SCHEMES)


@dataclass(frozen=True)
class Location:
    """Where something lives.

    Attributes:
        uri: the canonical string: an absolute path (local), ``file:///abs/path`` (shared) or
            ``scheme://...`` (remote; ``s3a`` written as ``s3``, ``gcs`` as ``gs``).
        kind: ``"local"`` (a path on the driver's host), ``"shared"`` (mounted at the same path on
            every host) or ``"remote"`` (served through pyarrow.fs).
        scheme: ``"file"`` for local and shared, else the remote scheme (``s3``, ``gs``, ``hdfs``,
            ``viewfs``, ``abfs``, ``abfss``).
    """

    uri: str
    kind: str
    scheme: str

    def __post_init__(self):
        if self.kind not in ("local", "shared", "remote"):
            raise StorageError(f"Location kind must be local, shared or remote, not {self.kind!r}")

    @property
    def path(self) -> str:
        """The file-system path of a local or shared location."""
        if self.kind == "local":
            return self.uri
        if self.kind == "shared":
            return urllib.parse.unquote(urllib.parse.urlsplit(self.uri).path)
        raise StorageError(f"{self.uri} is a remote location; it has no local path")

    def join(self, *parts: str) -> "Location":
        """The location of ``parts`` (relative, ``/``-separated) below this one."""
        rel = clean_rel("/".join(parts), allow_empty=True)
        if not rel:
            return self
        if self.kind == "local":
            return Location(os.path.join(self.uri, *rel.split("/")), "local", "file")
        split = urllib.parse.urlsplit(self.uri)
        path = split.path.rstrip("/") + "/" + urllib.parse.quote(rel) if self.kind == "shared" \
            else split.path.rstrip("/") + "/" + rel
        return Location(urllib.parse.urlunsplit(split._replace(path=path)), self.kind, self.scheme)

    def __str__(self) -> str:
        return self.uri


def parse_location(text: str | Location) -> Location:
    """Classify ``text`` as a local path, a ``file://`` mount or a remote URI.

    A path without a scheme (relative, ``~/...``, ``C:\\...``) is local and made absolute on this
    host. An unknown scheme, a malformed URI or one carrying credentials raises StorageError.
    """
    if isinstance(text, Location):
        return text
    text = str(text).strip()
    if not text:
        raise StorageError("an empty location was given; pass a path or a URI such as s3://bucket/dir")
    if "://" not in text:
        # C:\x and C:/x parse with scheme "c": a Windows drive, not a URI; so does any plain path.
        return Location(os.path.abspath(os.path.expanduser(text)), "local", "file")
    split = urllib.parse.urlsplit(text)
    given = split.scheme.lower()
    if len(given) <= 1:                         # C://x: a Windows drive; /a://b: a strange path
        return Location(os.path.abspath(os.path.expanduser(text)), "local", "file")
    scheme = _SCHEMES.get(given)
    if scheme is None:
        raise StorageError(
            f"unsupported location {redact(text)!r}: the scheme {given + '://'!r} is not one elearn "
            f"can write to. Use a local path, or one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)} (s3a:// is read as s3://, gcs:// as gs://)")
    if scheme == "file":
        if split.netloc not in ("", "localhost"):
            raise StorageError(f"{text!r}: a file:// URI names a path mounted on every host, "
                               f"file:///mnt/shared/dir; it cannot name another host ({split.netloc!r})")
        path = urllib.parse.unquote(split.path)
        if not path.startswith("/"):
            raise StorageError(f"{text!r}: a file:// URI needs an absolute path (file:///mnt/shared/dir)")
        path = posixpath.normpath(path)
        return Location("file://" + urllib.parse.quote(path), "shared", "file")
    _refuse_credentials(text, scheme, split)
    if not split.netloc:
        what = {"s3": "bucket", "gs": "bucket", "abfs": "container/account",
                "abfss": "container/account"}.get(scheme, "host")
        if scheme not in ("hdfs", "viewfs"):   # hdfs:///path uses fs.defaultFS
            raise StorageError(f"{text!r} names no {what}: write {given}://{what.split('/')[0]}/path")
    path = split.path.rstrip("/")
    if ".." in path.split("/"):
        raise StorageError(f"{redact(text)!r}: '..' is not allowed in a storage URI")
    uri = urllib.parse.urlunsplit((scheme, split.netloc, path, split.query, ""))
    return Location(uri, "remote", scheme)


# Azure query parameters that carry a secret (a SAS token's signature, a service principal's
# secret); pyarrow would accept them, elearn does not take credentials from its flags.
_AZURE_SECRET_PARAMS = {"sig", "client_secret", "sv", "se", "sp", "st", "spr", "srt", "ss", "sr", "skoid"}


def _refuse_credentials(text: str, scheme: str, split: urllib.parse.SplitResult) -> None:
    where = {
        "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, AWS_PROFILE and "
              "~/.aws/credentials, or the instance's role",
        "gs": "GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login` or the "
              "instance's service account",
        "abfs": "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET in the environment, a managed "
                "identity, workload identity or `az login`",
    }
    where["abfss"] = where["abfs"]
    if scheme in ("s3", "gs") and (split.username or split.password):
        raise StorageError(f"{redact(text)!r} carries credentials in the URI; elearn does not take them "
                           f"from its flags (they would end up in logs and process lists). Remove them "
                           f"and provide them through {where[scheme]}")
    if scheme in ("abfs", "abfss"):
        keys = {k.lower() for k, _ in urllib.parse.parse_qsl(split.query, keep_blank_values=True)}
        if split.password or keys & _AZURE_SECRET_PARAMS:
            raise StorageError(f"{redact(text)!r} carries a credential (a SAS token or a client secret) "
                               f"in the URI; elearn does not take them from its flags. Remove it and "
                               f"provide credentials through {where[scheme]}")


def redact(text: str) -> str:
    """``text`` with credentials masked for messages: S3/GCS userinfo (a key pair), any password,
    every query value. An Azure ``container@account`` stays readable."""
    try:
        split = urllib.parse.urlsplit(text)
    except ValueError:
        return "<unparseable URI>"
    netloc = split.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user or _SCHEMES.get(split.scheme.lower()) in ("s3", "gs"):
            user = "***"
        netloc = user + "@" + host
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(split.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((split.scheme, netloc, split.path, query, ""))


def clean_rel(path: str, allow_empty: bool = False) -> str:
    """A relative ``/``-separated path inside a location, or StorageError (``..``, absolute, NUL)."""
    path = str(path).replace(os.sep, "/") if os.sep != "/" else str(path)
    if path.startswith("/") or "\0" in path:
        raise StorageError(f"{path!r}: paths inside a location are relative (no leading '/', no NUL)")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StorageError(f"{path!r}: '..' is not allowed in a path inside a location")
    rel = "/".join(parts)
    if not rel and not allow_empty:
        raise StorageError("an empty path names the location itself, not a file in it")
    return rel
