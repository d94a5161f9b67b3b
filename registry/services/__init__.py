"""Services own transactions: one public call is one ``with sessions.begin():`` block."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from registry.db import create_db_engine, create_session_factory
from registry.services.deployments import DeploymentService
from registry.services.endpoints import EndpointService
from registry.services.feedback import FeedbackService
from registry.services.gc import GcService
from registry.services.keys import KeyService
from registry.services.leases import LeaseService
from registry.services.ledger import RolloutLedger
from registry.services.models import ModelService
from registry.services.validations import ValidationService
from registry.services.versions import VersionService
from registry.settings import Settings
from registry.storage import ArtifactStore, create_store
from registry.vocabulary import DeploymentTarget


@dataclass
class Registry:
    """Everything the API (and later the worker and the controller) needs, built once."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    keys: KeyService
    models: ModelService
    versions: VersionService
    validations: ValidationService
    deployments: DeploymentService
    endpoints: EndpointService
    feedback: FeedbackService
    gc: GcService

    def check_database(self) -> None:
        """Raise if the database does not answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.endpoints.close()
        self.engine.dispose()


def build_registry(settings: Settings, *, store: ArtifactStore | None = None) -> Registry:
    engine = create_db_engine(settings.database_url)
    sessions = create_session_factory(engine)
    store = store or create_store(settings)
    endpoints = EndpointService(sessions)
    return Registry(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        keys=KeyService(
            sessions,
            cache_seconds=settings.auth_cache_seconds,
            failure_limit=settings.auth_failure_limit,
            failure_window_seconds=settings.auth_failure_window_seconds,
            address_failure_limit=settings.auth_failure_address_limit,
        ),
        models=ModelService(sessions, store=store),
        versions=VersionService(
            sessions,
            store=store,
            max_artifact_bytes=settings.max_artifact_bytes,
            lease_seconds=settings.upload_lease_seconds,
            per_key=settings.uploads_per_key,
        ),
        validations=ValidationService(
            sessions,
            lease_seconds=settings.validation_lease_seconds,
            per_key=settings.validations_per_key,
        ),
        deployments=DeploymentService(
            sessions,
            ledger=RolloutLedger(
                sessions, leases=LeaseService(sessions), on_routes_changed=endpoints.invalidate
            ),
            targets=tuple(DeploymentTarget) if settings.kube_enabled else (DeploymentTarget.LOCAL,),
        ),
        endpoints=endpoints,
        feedback=FeedbackService(sessions),
        gc=GcService(sessions, store=store),
    )
