"""From per-layer costs and sizes to recipes: the frontier and the trial search along it.

Each layer has candidate joint settings (one value per knob), each with a
predicted size (`sizes.size_table`) and cost (`Sensitivity.joint_loss`).
`frontier` orders all the moves "layer L goes to a smaller setting" by cost
per byte saved (a greedy multiple-choice knapsack on each layer's lower convex
hull), so that point i of the frontier is the recipe of least predicted cost
among those of its size: from every layer untouched (int8 QAT only) to every
layer at its harshest setting.

`search` then runs the real pipeline at a few points of the frontier and
bisects, in log size, between the smallest point that kept the budget and the
largest that did not; runs left once the two are neighbours go to the moves
past the one that failed, skipping its layer.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Option:
    """One joint setting of one layer: a tuple of values in `KNOBS` order."""

    settings: tuple
    bytes: int
    cost: float


@dataclasses.dataclass
class Point:
    """A point of the frontier: a setting per layer, its predicted bytes and cost."""

    choice: dict  # {layer: Option}
    bytes: int
    cost: float


def lower_hull(options):
    """The options on the lower convex hull of (bytes, cost), from the largest down.

    Starts at the cheapest option (ties: the largest, the neutral); each next option is
    the smaller one with the least cost added per byte saved (ties: the
    smallest). Options off the hull are never the best at any trade-off.

    Example:

    >>> hull = lower_hull([Option("a", 100, 0.0), Option("b", 60, 1.0),
    ...                    Option("c", 50, 3.0), Option("d", 10, 4.0)])
    >>> [o.settings for o in hull]
    ['a', 'b', 'd']
    """
    current = min(options, key=lambda o: (o.cost, -o.bytes))
    hull = [current]
    while True:
        smaller = [o for o in options if o.bytes < current.bytes]
        if not smaller:
            return hull
        current = min(
            smaller, key=lambda o: ((o.cost - current.cost) / (current.bytes - o.bytes), o.bytes)
        )
        hull.append(current)


def frontier(options_by_layer):
    """The frontier of recipes, from no compression to the harshest.

    Args:
        options_by_layer: `{layer: [Option, ...]}` (at least the neutral one each).

    Returns:
        A list of `Point`s, sizes decreasing, costs non-decreasing.

    Example:

    >>> points = frontier({
    ...     "a": [Option("a0", 100, 0.0), Option("a1", 20, 0.8)],   # 0.01 per byte
    ...     "b": [Option("b0", 50, 0.0), Option("b1", 10, 0.04)],   # 0.001 per byte
    ... })
    >>> [(p.bytes, round(p.cost, 2)) for p in points]
    [(150, 0.0), (110, 0.04), (30, 0.84)]
    """
    hulls = {layer: lower_hull(options) for layer, options in options_by_layer.items()}
    choice = {layer: hull[0] for layer, hull in hulls.items()}
    moves = []
    for order, (layer, hull) in enumerate(hulls.items()):
        for step, (a, b) in enumerate(zip(hull, hull[1:])):
            moves.append(((b.cost - a.cost) / (a.bytes - b.bytes), order, step, layer, b))
    moves.sort(key=lambda move: move[:3])
    points = [_point(choice)]
    for *_, layer, option in moves:
        choice = {**choice, layer: option}
        points.append(_point(choice))
    return points


def uniform_frontier(options_by_layer):
    """The recipes giving every layer the same setting that no other one beats.

    The baseline per-layer allocation is measured against. "The same" is per
    knob: a layer whose options lack a value of the setting (a knob not
    searched on it) takes the neutral one, its first option's. There are few
    such recipes, so all the Pareto-optimal ones (no other is both smaller
    and cheaper) are kept, not only those on the convex hull.

    Example:

    >>> points = uniform_frontier({
    ...     "a": [Option(("0",), 100, 0.0), Option(("1",), 20, 0.8), Option(("2",), 60, 0.5)],
    ...     "b": [Option(("0",), 50, 0.0), Option(("1",), 10, 0.04), Option(("2",), 30, 0.3)],
    ...     "c": [Option(("0",), 40, 0.0)],   # no setting but the neutral one
    ... })
    >>> [(p.bytes, round(p.cost, 2)) for p in points]  # (130, 0.8) is off the convex hull
    [(190, 0.0), (130, 0.8), (70, 0.84)]
    """
    by_settings = {
        layer: {option.settings: option for option in options}
        for layer, options in options_by_layer.items()
    }
    combos = sorted(set().union(*(set(table) for table in by_settings.values())), key=repr)
    totals = []
    for combo in combos:
        choice = {layer: _projected(table, combo) for layer, table in by_settings.items()}
        if all(option is not None for option in choice.values()):
            totals.append((_totals(choice), choice))
    front, cheapest = [], None
    for (size, cost), choice in sorted(totals, key=lambda t: t[0]):
        if cheapest is None or cost < cheapest:
            front.append(choice)
            cheapest = cost
    return [_point(choice) for choice in reversed(front)]


def _projected(table, combo):
    """The option of `combo`, with each value the layer lacks replaced by its neutral one."""
    neutral = next(iter(table))
    values = [{settings[i] for settings in table} for i in range(len(combo))]
    return table.get(tuple(v if v in values[i] else neutral[i] for i, v in enumerate(combo)))


def _totals(choice):
    return sum(o.bytes for o in choice.values()), sum(o.cost for o in choice.values())


def _point(choice):
    return Point(
        dict(choice),
        sum(o.bytes for o in choice.values()),
        sum(o.cost for o in choice.values()),
    )


def log_midpoint(points, lo, hi, offset=0):
    """The index strictly between `lo` and `hi` whose size is nearest their geometric mean.

    Sizes are `point.bytes + offset` (offset: the bytes of the file that are
    not kernels). Returns None when no index lies strictly between.

    Example:

    >>> pts = [Point({}, b, 0.0) for b in (1000, 500, 200, 100, 10)]
    >>> log_midpoint(pts, 0, 4)  # sqrt(1000 * 10) = 100
    3
    """
    if hi - lo < 2:
        return None
    target = (math.log(points[lo].bytes + offset) + math.log(points[hi].bytes + offset)) / 2
    return min(
        range(lo + 1, hi), key=lambda i: (abs(math.log(points[i].bytes + offset) - target), i)
    )


def search(points, run_trial, start, max_trials):
    """Finds (about) the smallest point that keeps the budget, with at most `max_trials` runs.

    Passing is taken to be monotone along the frontier, and `start` (a point
    predicted to pass, e.g. the harshest one that keeps the budget even
    without training) to pass until a run says otherwise. Each trial bisects,
    in log size, the bracket between the harshest point known (or predicted)
    to pass and the mildest known to fail (the harshest point while none
    failed): after a pass the next run is harsher, after a failure it backs
    off. If no run passed, `start` and then point 0 (no compression) run,
    beyond `max_trials`, until one passes.

    When the bracket closes (point i passed, i + 1 failed) with runs left, and
    the frontier goes one layer at a time (as `frontier`'s does), the move
    that failed is only the cheapest next one, not the only one: the runs
    left try the moves after it in frontier order, one at a time from the
    passing recipe, skipping the layers whose move failed. Each such point
    is appended to `points`.

    Args:
        points: The frontier (a list; points past its end may be appended).
        run_trial: `run_trial(index) -> (passed, measured_bytes)`.
        start: Index predicted to pass.
        max_trials: Runs at most (>= 1), the fallbacks aside.

    Returns:
        `(best, tried)`: the index of the harshest passing point (None if none
        passed) and `{index: passed}` in the order run.

    Example:

    >>> pts = [Point({}, b, 0.0) for b in (1000, 700, 500, 300, 200, 120, 80, 50)]
    >>> search(pts, lambda i: (i <= 4, pts[i].bytes), start=2, max_trials=3)
    (4, {4: True, 5: False})
    """
    last = len(points) - 1
    tried, offset = {}, 0

    def bracket():
        passes = [i for i, ok in tried.items() if ok]
        fails = [i for i, ok in tried.items() if not ok]
        above = min(fails) if fails else None
        if passes:
            below = max(passes)
        elif start not in tried and (above is None or start < above):
            below = start
        else:
            below = 0
        return below, above

    def next_index():
        below, above = bracket()
        if above is None:
            index = log_midpoint(points, below, last, offset)
            if index is None:
                index = last if below < last else below
        else:
            index = log_midpoint(points, below, above, offset)
            if index is None:
                index = below
        return None if index in tried else index

    def run(index):
        nonlocal offset
        passed, measured = run_trial(index)
        tried[index] = passed
        # What the kernels do not account for (biases, graph, scales), from the real file.
        offset = max(0, measured - points[index].bytes)
        return passed

    while len(tried) < max_trials:
        index = next_index()
        if index is None:
            break
        run(index)
    _past_the_failed_move(points, tried, max_trials, run)
    if not any(tried.values()):
        for fallback in (start, 0):
            if fallback not in tried and run(fallback):
                break
    passes = [i for i, ok in tried.items() if ok]
    return (max(passes) if passes else None), tried


def _past_the_failed_move(points, tried, max_trials, run):
    """The runs left after the bracket closed: the next moves, without the failed layers'.

    Point j of a one-layer-at-a-time frontier is point j - 1 with one layer
    moved to a smaller option. From the harshest passing point i, whose move
    to i + 1 failed, each later move of another layer is tried on top of the
    recipe that passes so far: kept if it passes, its layer frozen if not.
    """
    moves = _single_moves(points)
    passes = [i for i, ok in tried.items() if ok]
    if moves is None or not passes or tried.get(max(passes) + 1) is not False:
        return
    best = max(passes)
    choice, frozen = points[best].choice, {moves[best][0]}
    for layer, option in moves[best + 1 :]:
        if len(tried) >= max_trials:
            return
        if layer in frozen:
            continue
        points.append(_point({**choice, layer: option}))
        if run(len(points) - 1):
            choice = points[-1].choice
        else:
            frozen.add(layer)


def _single_moves(points):
    """`[(layer, option)]`: what each point changes from the one before (move j to point j + 1).

    None unless every point changes exactly one layer (not so for `uniform_frontier`).
    """
    moves = []
    for before, after in zip(points, points[1:]):
        changed = [layer for layer in after.choice if after.choice[layer] != before.choice.get(layer)]
        if len(changed) != 1:
            return None
        moves.append((changed[0], after.choice[changed[0]]))
    return moves
