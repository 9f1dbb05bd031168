"""Settings, read from ``FACELEDGER_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_url(home: Path) -> str:
    """The default database: an SQLite file under HOME."""
    return f"sqlite:///{(home / 'faceledger.db').resolve()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACELEDGER_", env_file=".env", extra="ignore")

    # where things live
    data_dir: Path = Field(Path("../shared/data"), description="Evaluation and test faces (LFW, UTKFace, ...).")
    home: Path = Field(Path(".faceledger"), description="State: database, index, caches, reports.")
    model_dir: Path | None = Field(None, description="Directory with your own ONNX models instead of the bundled ones.")
    detector_file: str | None = Field(None, description="Detector file name inside model_dir (YuNet-compatible).")
    recognizer_file: str | None = Field(None, description="Recognizer file name inside model_dir (112x112 input).")
    recognizer_mean: float = Field(0.0, description="Subtracted from RGB pixels before a model_dir recognizer.")
    recognizer_std: float = Field(1.0, description="Divides RGB pixels before a model_dir recognizer.")

    # models
    profile: Literal["fast", "accurate"] = Field("fast", description="Model profile: fast (SFace) or accurate (SFace+dlib).")
    threads: int = Field(1, ge=1, description="Intra-op threads per ONNX session (1 is fastest per core here).")
    embed_batch: int = Field(2, ge=1, le=64, description="Faces per recognizer run; larger batches are slower per face on CPU.")

    # gallery
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file HOME/faceledger.db.")
    vector_store: str = Field("faiss", description="Where templates are searched: faiss (embedded, the default) or pgvector (in PostgreSQL).")
    ivf_threshold: int = Field(200_000, ge=1, description="Collections this large use an IVF index, smaller ones exact search.")
    plaintext_vectors_accepted: bool = Field(False, description="Let a store that searches plaintext vectors (pgvector) run with a template key set: its copy of the templates is not encrypted.")
    vector_sync_interval: float = Field(0.0, ge=0, description="Seconds between a process's checks of the change feed (other processes' enrolments and erasures); 0: before every search.")
    ivf_probe_fraction: float | None = Field(None, gt=0, le=1, description="Share of IVF lists searched per query (recall vs speed, see benchmarks); default: each store's measured share (faiss 1/4 of its 2·√n lists, pgvector 1/8).")

    # open-set policy (1:N searches)
    default_target_fpir: float = Field(1e-3, gt=0, le=0.5, description="Target FPIR of new collections: the chance that a search for someone not enrolled returns a match, at any gallery size.")
    match_margin: float = Field(0.0, ge=0, le=1, description="A match needs the top subject this far (similarity) ahead of the second (measured by `faceledger eval open-set`).")

    # service
    host: str = Field("127.0.0.1", description="Address `faceledger serve` listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port `faceledger serve` listens on.")
    workers: int = Field(default_factory=cores, ge=1,
                         description="Inference threads of the service (default: one per core this process may use).")
    max_queue: int = Field(64, ge=1, description="Requests waiting for a worker beyond this get 503.")
    queue_timeout: float = Field(30.0, gt=0, description="Seconds a request may wait for a worker before a 503.")
    max_images_per_request: int = Field(10, ge=1, description="Images one enrolment request may carry.")
    metrics_token: str | None = Field(None, description="Bearer token for GET /metrics (besides admin keys); unset: admin keys only.")
    auth_failures_per_minute: int = Field(20, ge=1, description="Refused API keys one client address may present a minute before 429.")
    identify_per_minute: int = Field(600, ge=1, description="Identification requests per key per minute (429 above).")

    # accountability
    audit_key: str | None = Field(None, description="HMAC key sealing the audit log; default: a key file HOME/audit-hmac.key.")
    credentials_key: str | None = Field(None, description="AES-256 key (base64 or hex) sealing the secrets of AWS-style "
                                        "keys (SigV4 needs the secret to check a signature); default: a key file "
                                        "HOME/credentials.key, created with the first such key.")
    device: str = Field("auto", description="Where ONNX Runtime runs the models: auto (a CUDA GPU when onnxruntime-gpu "
                                           "is installed, else the CPU), cpu, or cuda (an error without a GPU).")
    template_key: str | None = Field(None, description="AES-256 key (base64 or hex) encrypting templates at rest.")
    audit_enabled: bool = Field(True, description="Only for measuring the log's cost (bench_load --no-audit); never off in use.")
    retention_interval: float = Field(3600.0, gt=0, description="Seconds between the service's retention runs.")
    audit_seal_interval: float = Field(60.0, ge=0, description="Seal the audit chain when a record has waited this many seconds unsealed (0: off).")
    audit_checkpoint_every: int = Field(100, ge=1, description="Seal the audit chain every this many records.")

    # input limits
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Refuse inputs larger than this many bytes.")
    max_image_pixels: int = Field(25_000_000, ge=1, description="Refuse images with more pixels (checked before decoding). 25 MP keeps 24 MP camera photos (6000x4000) whole, so small faces of group photos stay findable; the detector sees at most detect_max_side px, so more pixels only cost decode time and memory (~7 bytes a pixel).")
    decode_memory_budget: int = Field(1 << 30, ge=1, description="Bytes all image decodes in the process may hold at once; each reserves its estimated peak (175 MB for a 25 MP RGB photo) and waits up to 10 s for room, then fails OVERLOADED.")
    max_faces: int = Field(50, ge=1, description="At most this many faces are returned per image.")

    # detection
    detect_score: float = Field(0.6, ge=0.0, le=1.0, description="Detector confidence threshold.")
    detect_nms: float = Field(0.3, ge=0.0, le=1.0, description="Non-maximum suppression IoU.")
    detect_max_side: int = Field(640, ge=64, description="Images are scaled down so the longer side fits this.")
    reduced_decode: bool = Field(True, description="Decode a JPEG at least twice detect_max_side on its longer side at 1/2, 1/4 or 1/8 of its size (in the DCT domain) for detection, and decode it whole only when a face is too small there for its aligned crop. Images given as arrays, and enrolment, always use every pixel.")

    # quality limits for enrolment
    min_face_px: float = Field(48.0, description="SMALL_FACE below this face box size (shorter side, pixels).")
    min_confidence: float = Field(0.8, description="LOW_CONFIDENCE below this detector score.")
    min_sharpness: float = Field(40.0, description="LOW_SHARPNESS below this variance of Laplacian on the aligned crop.")
    min_brightness: float = Field(40.0, description="LOW_BRIGHTNESS below this mean grey level of the crop.")
    max_brightness: float = Field(220.0, description="HIGH_BRIGHTNESS above this mean grey level of the crop.")
    min_contrast: float = Field(20.0, description="LOW_CONTRAST below this grey-level standard deviation.")
    max_yaw: float = Field(45.0, description="EXTREME_POSE above this estimated |yaw| in degrees.")
    max_roll: float = Field(45.0, description="EXTREME_POSE above this |roll| in degrees.")

    # cameras and video
    stream_allowed_hosts: str = Field("", description="Comma-separated hosts (exact names) and networks (CIDR) that streams and webhooks may reach; empty: none (the operator allow-lists cameras and receivers).")
    stream_identify_per_hour: int = Field(3600, ge=0, description="Default identifications per hour a stream may make (its budget; a stream may ask for less, or more with the admin scope).")
    max_streams: int = Field(8, ge=0, description="Streams one process watches at once.")
    max_video_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Refuse uploaded videos larger than this many bytes.")
    webhook_timeout: float = Field(5.0, gt=0, description="Seconds a webhook receiver has to answer.")
    webhook_retry_delays: str = Field("1,5,30,120,600,1800", description="Seconds before each retry of a failed webhook delivery; after the last, the delivery is a dead letter (`faceledger webhooks replay`).")

    cache: Path | None = Field(None, description="Embedding cache folder (default: HOME/cache).")

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL in use: the setting, or the SQLite file under HOME."""
        return self.database_url or default_url(self.home)

    @property
    def cache_dir(self) -> Path:
        return self.cache or self.home / "cache"


@lru_cache
def get_settings() -> Settings:
    return Settings()
