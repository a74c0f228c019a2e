"""Argument checks whose errors repeat the received value."""


def check_int(name, value, minimum=None):
    """Raises ValueError unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{name} must be an integer. Received: {name}={value!r}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(
            f"{name} must be >= {minimum}. Received: {name}={value!r}"
        )
    return value


def check_fraction(name, value, upper_inclusive=False):
    """Raises ValueError unless `value` is a number in [0, 1) (or [0, 1])."""
    bound = "1]" if upper_inclusive else "1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(
            f"{name} must be in [0, {bound}. Received: {name}={value!r}"
        )
    return float(value)


def check_one_of(name, value, choices):
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return value
