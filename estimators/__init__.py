"""estimators: generalized conditional entropy estimators on arrays."""

from estimators.errors import ValidationError

__all__ = ["ValidationError"]
