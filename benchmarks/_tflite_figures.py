"""Accuracy, size, gzip size and latency of `.tflite` files, every file measured alike."""

import statistics

from tfcompress import demo, lite


def file_figures(flatbuffer, x_test, y_test):
    """TFLite top-1 accuracy, bytes and gzip -9 bytes of one `.tflite`.

    Returns:
        `{"acc": float, "bytes": int, "gzip": int}`.
    """
    return {
        "acc": lite.evaluate(flatbuffer, x_test, y_test)["accuracy"],
        "bytes": len(flatbuffer),
        "gzip": demo.gzip_size(flatbuffer),
    }


def latency_medians(files, rounds, runs):
    """Median single-image latency of each file (LiteRT, 1 thread), in ms.

    The files take turns, `rounds` times, so a burst of load from other
    processes lands on all of them rather than on one; a file's figure is the
    median over rounds of each round's median of `runs` inferences.

    Args:
        files: Dict name -> `.tflite` bytes.
        rounds: Interleaved rounds.
        runs: Timed inferences per file and round.

    Returns:
        Dict name -> milliseconds.
    """
    medians = {name: [] for name in files}
    for _ in range(rounds):
        for name, flatbuffer in files.items():
            medians[name].append(lite.benchmark(flatbuffer, num_threads=1, runs=runs)["median_ms"])
    return {name: statistics.median(values) for name, values in medians.items()}


def tflite_figures(files, x_test, y_test, rounds, runs):
    """`file_figures` of each file plus its `"latency_ms"` (`latency_medians`).

    Args:
        files: Dict name -> `.tflite` bytes.
        x_test, y_test: Evaluation data.
        rounds, runs: As `latency_medians`.

    Returns:
        Dict name -> `{"acc", "bytes", "gzip", "latency_ms"}`.
    """
    figures = {name: file_figures(flatbuffer, x_test, y_test) for name, flatbuffer in files.items()}
    for name, milliseconds in latency_medians(files, rounds, runs).items():
        figures[name]["latency_ms"] = milliseconds
    return figures
