"""Trial weights every machine can reach: an Optuna artifact store, a shared folder or S3-compatible storage.

Without one, a trial's weights stay under the ``studies/`` folder of the machine that trained it. With one
(``--artifacts``, kept in the study's configuration), each completed trial uploads its best weights, the trial
records the artifact's id, and whoever needs them later (export, report, refit) downloads them on demand.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from automl_img.errors import StudyError, TrialFailed
from automl_img.study.storage import redact

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore

ARTIFACTS_ENV = "AUTOML_IMG_ARTIFACTS"
S3_SCHEME = "s3://"


def open_store(location: str) -> ArtifactStore:
    """``s3://BUCKET`` (endpoint and credentials as boto3 finds them: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``), or a folder that every worker sees."""
    from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

    if not location.startswith(S3_SCHEME):
        return FileSystemArtifactStore(location)
    bucket = location[len(S3_SCHEME) :].strip("/")
    if not bucket or "/" in bucket or "@" in bucket:
        raise StudyError(
            f"artifact store {redact(location)} is not s3://BUCKET (a bucket name, no key prefix; "
            "credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, never the address)"
        )
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StudyError("an s3:// artifact store needs boto3: pip install 'automl-img[s3]'") from None
    # A few quick retries: an unreachable store should be named within seconds, not after minutes of back-off.
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return Boto3ArtifactStore(bucket, boto3.client("s3", config=config))


def check_store(location: str) -> None:
    """Write and remove a small probe through the store, so a wrong address, a missing bucket or refused
    credentials stop the search before any trial, with one line naming the store."""
    if not location.startswith(S3_SCHEME) and not Path(location).is_dir():
        raise StudyError(
            f"artifact store folder {location} does not exist; create it, or mount the shared folder every worker uses"
        )
    store = open_store(location)
    probe = f"automl-img-probe-{uuid.uuid4()}"
    try:
        store.write(probe, io.BytesIO(b"automl-img can write here"))
        store.remove(probe)
    except Exception as exc:  # noqa: BLE001 - each store's client (file system, boto3) fails in its own way
        raise StudyError(
            f"cannot use artifact store {redact(location)}: {_reason(exc)}; check its address "
            "(AWS_ENDPOINT_URL for an S3-compatible server), the bucket and the credentials"
        ) from None


def upload_weights(location: str, path: Path, trial: optuna.Trial) -> str:
    """Upload a trial's weights and record the artifact on the trial; returns its id. A failure fails the trial."""
    from optuna.artifacts import upload_artifact

    try:
        return upload_artifact(artifact_store=open_store(location), file_path=str(path), study_or_trial=trial)
    except Exception as exc:  # noqa: BLE001 - each store's client (file system, boto3) fails in its own way
        raise TrialFailed(f"uploading its weights to {redact(location)} failed: {_reason(exc)}") from None


def download_weights(location: str, artifact_id: str, target: Path) -> None:
    """Fetch an artifact to ``target``, written beside it and renamed, so an interrupted download leaves nothing."""
    from optuna.artifacts import download_artifact

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        download_artifact(artifact_store=open_store(location), file_path=str(partial), artifact_id=artifact_id)
        os.replace(partial, target)
    except StudyError:
        raise
    except Exception as exc:  # noqa: BLE001 - each store's client (file system, boto3) fails in its own way
        raise StudyError(
            f"cannot download weights {artifact_id} from artifact store {redact(location)}: {_reason(exc)}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
