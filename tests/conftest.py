"""Suite-wide guard: what `make setup` installs is a precondition of the tests, never a reason to skip.

The tests use the real Fashion-MNIST (no download at run time). If it is
missing, every test fails with the fix, so CI can never pass by skipping.
"""

from __future__ import annotations

import pytest

from ganray.data import fashion


def missing_fashion_mnist() -> list[str]:
    """The Fashion-MNIST splits absent from the dataset package's folder."""
    return [s for s in ("train", "test") if not fashion.has_split(fashion.DEFAULT_DIR, s)]


@pytest.fixture(scope="session", autouse=True)
def fashion_mnist_installed() -> None:
    missing = missing_fashion_mnist()
    if missing:
        pytest.fail(
            f"Fashion-MNIST {'/'.join(missing)} split missing in {fashion.DEFAULT_DIR}: run `make setup` "
            "(it installs the dataset-fashion-mnist package). The tests need the real data and do not skip.",
            pytrace=False,
        )
