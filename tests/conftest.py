"""Shared fixtures: the real sample data in ../shared/data, a small synthetic set, small images in odd formats."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skip the test when it is absent, except in CI where absence is a failure."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the shared sample data is missing: {path}")
        pytest.skip(f"shared sample data not found: {path}")
    return path


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    """The real HAM10000 sample (2,238 dermoscopy JPEGs, labels.csv layout)."""
    return shared_path("ham10000-224")


@pytest.fixture(scope="session")
def isic2020_csv() -> Path:
    return shared_path("isic2020-meta", "train.csv")


@pytest.fixture(scope="session")
def isic2019_dir() -> Path:
    return shared_path("isic2019-meta")


@pytest.fixture(scope="session")
def hair_dir() -> Path:
    return shared_path("hair-augment")


@pytest.fixture(scope="session")
def ham_subset(tmp_path_factory: pytest.TempPathFactory, ham_dir: Path) -> Path:
    """A 200-image slice of the HAM sample in the labels layout (real images, fast to cache and train)."""
    labels = pd.read_csv(ham_dir / "labels.csv")
    subset = pd.concat([labels[labels.target == 1].head(60), labels[labels.target == 0].head(140)])
    root = tmp_path_factory.mktemp("ham-subset")
    (root / "images").mkdir()
    for name in subset["image_name"]:
        shutil.copy(ham_dir / "images" / f"{name}.jpg", root / "images" / f"{name}.jpg")
    subset.to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set (labels layout with a test split) shared by the training tests."""
    from melanoma_search.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_train=120, n_test=20, size=64, seed=3)


POSTGRES_URL = os.environ.get("MELANOMA_SEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The project machines' PostgreSQL 15 (trust auth, database ``test``); skipped where absent, required in CI."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any driver or connection error means: no PostgreSQL here
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    return POSTGRES_URL


@pytest.fixture
def pg_name(postgres_url: str) -> Iterator[str]:
    """A fresh study name in the test PostgreSQL, its study deleted afterwards (the database outlives the tests)."""
    import optuna

    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=postgres_url)
    except KeyError:
        pass
