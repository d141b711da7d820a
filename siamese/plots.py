"""Figures of the report notebook: filter banks, distance matrices, timelines, ROC/DET curves, model bars.

Every function draws on a matplotlib `Axes` it is given (or returns the numbers one
figure needs), so the notebook only arranges panels. Nothing here computes a
result that is reported; the measurements come from `siamese.metrics` and the
committed result files.

Example:
    >>> import matplotlib.pyplot as plt
    >>> from pyannote.core import Annotation, Segment
    >>> turns = Annotation(uri="demo")
    >>> turns[Segment(0.0, 2.0)] = "A"
    >>> turns[Segment(2.5, 4.0)] = "B"
    >>> figure, axes = plt.subplots()
    >>> plot_timeline(axes, turns, speaker_colours(["A", "B"]))
    >>> [label.get_text() for label in axes.get_yticklabels()]
    ['A', 'B']
"""

import numpy as np
from matplotlib import colormaps
from scipy.stats import norm
from sklearn.metrics import roc_curve

from siamese.metrics import equal_error_rate


def speaker_colours(labels):
    """`{label: colour}` for a list of speaker labels, in the order given.

    Up to 10 labels take tab10; more take tab20's dark shades first, so that
    neighbours in the list never get two shades of one hue.
    """
    if len(labels) <= 10:
        colours = colormaps["tab10"].colors
    else:
        shades = colormaps["tab20"].colors
        colours = shades[0::2] + shades[1::2]
    return {label: colours[index % len(colours)] for index, label in enumerate(labels)}


# Sinc filters.
def sinc_frequency_responses(layer, num_fft=4096):
    """Magnitude responses of a `SincConv1D` layer's filters, from the kernels the layer itself builds.

    Args:
        layer: a built `sincnet_keras.SincConv1D`.
        num_fft: FFT length (zero-padded kernels), which sets the frequency resolution.

    Returns:
        `(frequencies_hz, magnitudes)`: shapes `(num_fft // 2 + 1,)` and `(filters, num_fft // 2 + 1)`,
        magnitudes linear (each filter has unit gain at its band centre).
    """
    from keras import ops

    kernels = ops.convert_to_numpy(layer.sinc_filters())[:, 0, :]  # shape: (kernel_size, filters)
    magnitudes = np.abs(np.fft.rfft(kernels, n=num_fft, axis=0)).T  # shape: (filters, bins)
    frequencies = np.fft.rfftfreq(num_fft, d=1.0 / layer.sample_rate)
    return frequencies, magnitudes


def plot_filter_bank(axes, frequencies, magnitudes, title, floor_db=-40.0):
    """A filter bank as an image: one row per filter (in the order given), frequency across, gain in dB."""
    gain_db = 20 * np.log10(np.maximum(magnitudes, 10 ** (floor_db / 20)))
    image = axes.imshow(gain_db, aspect="auto", origin="lower", cmap="magma", vmin=floor_db, vmax=0.0,
                        extent=(frequencies[0] / 1000, frequencies[-1] / 1000, -0.5, len(magnitudes) - 0.5),
                        interpolation="nearest")
    axes.set(xlabel="frequency (kHz)", ylabel="filter", title=title)
    return image


# One recording: distances, dendrogram, timelines.
def window_speakers(reference, starts, window_s):
    """The reference speaker who talks longest inside each window (None where nobody does).

    Args:
        reference: `pyannote.core.Annotation`.
        starts: window starts in seconds, shape `(windows,)`.
        window_s: window length in seconds.
    """
    from pyannote.core import Segment

    speakers = []
    for start in starts:
        chart = reference.crop(Segment(start, start + window_s), mode="intersection").chart()
        speakers.append(chart[0][0] if chart else None)
    return speakers


def plot_distance_matrix(axes, distances, speakers, colours, title="", strip_width=None):
    """A square window-by-window distance matrix with coloured strips of the reference speakers on both axes.

    Args:
        distances: shape `(windows, windows)`.
        speakers: the reference speaker of each window (`window_speakers`), None for no one.
        colours: `{speaker: colour}`; windows with no speaker are drawn white.
        strip_width: strip thickness in windows (default: 3% of the windows).
    """
    count = len(distances)
    width = strip_width or max(2, round(0.03 * count))
    image = axes.imshow(distances, cmap="viridis", origin="upper", interpolation="nearest",
                        extent=(-0.5, count - 0.5, count - 0.5, -0.5))
    strip = np.array([colours.get(speaker, (1.0, 1.0, 1.0)) for speaker in speakers])[None]  # shape: (1, windows, 3)
    axes.imshow(strip, aspect="auto", extent=(-0.5, count - 0.5, -1.5 - width, -1.5), interpolation="nearest")
    axes.imshow(strip.transpose(1, 0, 2), aspect="auto", extent=(-1.5 - width, -1.5, count - 0.5, -0.5),
                interpolation="nearest")
    # Lines where the reference speaker changes make the blocks easy to follow.
    for change in np.flatnonzero([a != b for a, b in zip(speakers[:-1], speakers[1:])]) + 0.5:
        axes.axhline(change, color="white", linewidth=0.4, alpha=0.6)
        axes.axvline(change, color="white", linewidth=0.4, alpha=0.6)
    axes.set_xlim(-1.5 - width, count - 0.5)
    axes.set_ylim(count - 0.5, -1.5 - width)
    axes.set(xlabel="window", ylabel="window", title=title)
    return image


def plot_dendrogram(axes, tree, threshold, speakers, colours, leaves=40):
    """A truncated dendrogram with the threshold line; each leaf is marked with its windows' main reference speaker.

    Args:
        tree: a scipy linkage matrix over the windows.
        threshold: the distance at which clustering stops merging (drawn as a dashed line).
        speakers: the reference speaker of each window (`window_speakers`).
        colours: `{speaker: colour}`.
        leaves: the number of leaves kept (`truncate_mode="lastp"`); a leaf's label is its number of windows.
    """
    from collections import Counter

    from scipy.cluster.hierarchy import dendrogram, to_tree

    count = len(tree) + 1
    # Merges below the threshold are drawn dark (they happen), the ones above grey (they do not).
    shade = lambda link: "0.15" if tree[link - count, 2] <= threshold else "0.7"  # noqa: E731
    drawn = dendrogram(tree, truncate_mode="lastp", p=leaves, ax=axes, link_color_func=shade,
                       leaf_rotation=90, leaf_font_size=7)
    _, nodes = to_tree(tree, rd=True)
    bottom = -0.04 * axes.get_ylim()[1]
    for position, leaf in enumerate(drawn["leaves"]):
        members = Counter(speakers[window] for window in nodes[leaf].pre_order())
        speaker = members.most_common(1)[0][0]
        axes.plot(5 + 10 * position, bottom, "s", markersize=6, clip_on=False,
                  color=colours.get(speaker, (1.0, 1.0, 1.0)), markeredgecolor="0.3", markeredgewidth=0.3)
    axes.set_ylim(bottom * 2, None)
    axes.set_yticks([tick for tick in axes.get_yticks() if 0 <= tick <= axes.get_ylim()[1]])
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1)
    axes.text(axes.get_xlim()[1], threshold, f"threshold {threshold} ", color="tab:red", va="bottom", ha="right",
              fontsize=8)
    axes.set(ylabel="distance (average linkage)", xlabel="leaf: (number of windows) or a single window's index; square: its main reference speaker")
    return drawn


def plot_timeline(axes, annotation, colours, extent=None, default_colour="0.6"):
    """Horizontal bars, one row per speaker, of a `pyannote.core.Annotation`; rows follow `colours`' order."""
    labels = [label for label in colours if label in annotation.labels()]
    labels += sorted(label for label in annotation.labels() if label not in colours)
    for row, label in enumerate(labels):
        spans = [(segment.start, segment.duration) for segment in annotation.label_timeline(label)]
        axes.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours.get(label, default_colour))
    axes.set_yticks(range(len(labels)), labels)
    axes.set_ylim(len(labels) - 0.5, -0.5)
    if extent is not None:
        axes.set_xlim(*extent)
    axes.grid(axis="x", alpha=0.3)


# Verification curves.
def error_rates(distances, labels):
    """False-acceptance and false-rejection rates over every threshold (distances: lower = same speaker)."""
    false_accept, true_accept, _ = roc_curve(np.asarray(labels, int), -np.asarray(distances, float))
    return false_accept, 1.0 - true_accept


def plot_roc(axes, distances, labels, name=None, colour=None, **line_style):
    """ROC curve (true vs false acceptance) with its equal-error-rate point marked; `name=None`: no legend entry."""
    false_accept, false_reject = error_rates(distances, labels)
    eer, _ = equal_error_rate(distances, labels)
    label = None if name is None else f"{name} (EER {eer:.1%})"
    (line,) = axes.plot(false_accept, 1 - false_reject, color=colour, label=label, **line_style)
    axes.plot([eer], [1 - eer], "o", color=line.get_color(), alpha=line.get_alpha(),
              markersize=3 + 2 * line.get_linewidth())
    axes.plot([0, 1], [1, 0], ":", color="0.6", linewidth=0.8)  # where false acceptance = false rejection
    axes.set(xlabel="false acceptance rate", ylabel="true acceptance rate", xlim=(0, 1), ylim=(0, 1))
    axes.grid(alpha=0.3)


DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


def plot_det(axes, distances, labels, name=None, colour=None, limits=(0.001, 0.5), **line_style):
    """DET curve on normal-deviate axes (false rejection vs false acceptance) with its EER point marked."""
    false_accept, false_reject = error_rates(distances, labels)
    eer, _ = equal_error_rate(distances, labels)
    low, high = norm.ppf(limits[0]), norm.ppf(limits[1])
    deviate = lambda rate: np.clip(norm.ppf(np.clip(rate, 1e-6, 1 - 1e-6)), low, high)  # noqa: E731
    label = None if name is None else f"{name} (EER {eer:.1%})"
    (line,) = axes.plot(deviate(false_accept), deviate(false_reject), color=colour, label=label, **line_style)
    axes.plot([deviate(eer)], [deviate(eer)], "o", color=line.get_color(), alpha=line.get_alpha(),
              markersize=3 + 2 * line.get_linewidth())
    ticks = [tick for tick in DET_TICKS if limits[0] <= tick <= limits[1]]
    axes.set_xticks(norm.ppf(ticks), [f"{100 * tick:g}" for tick in ticks])
    axes.set_yticks(norm.ppf(ticks), [f"{100 * tick:g}" for tick in ticks])
    axes.plot([low, high], [low, high], ":", color="0.6", linewidth=0.8)  # the EER diagonal
    axes.set(xlim=(low, high), ylim=(low, high), xlabel="false acceptance rate (%)", ylabel="false rejection rate (%)")
    axes.grid(alpha=0.3)


# Model comparison.
def plot_model_bars(axes, table, metric, title):
    """Mean of one metric per model as bars, with the standard deviation over seeds as error bars.

    Args:
        table: `comparison.csv` of `experiments.compare` (columns `model`, `seeds`, `<metric>_mean`, `<metric>_std`).
        metric: e.g. `"eer"` or `"der_full_estimated"`; drawn in percent.
    """
    present = table.dropna(subset=[f"{metric}_mean"])
    means, spreads = 100 * present[f"{metric}_mean"].to_numpy(), 100 * present[f"{metric}_std"].fillna(0).to_numpy()
    rows = np.arange(len(present))
    axes.barh(rows, means, xerr=spreads, color="tab:blue", alpha=0.8, capsize=3)
    axes.set_yticks(rows, [f"{model} ({seeds} seed{'s' * (seeds != 1)})"
                           for model, seeds in zip(present["model"], present["seeds"].astype(int))])
    axes.set_ylim(len(rows) - 0.5, -0.5)  # first model on top (idempotent, unlike invert_yaxis, on shared axes)
    for row, mean, spread in zip(rows, means, spreads):
        axes.text(mean + spread, row, f"  {mean:.1f}", va="center", ha="left", fontsize=8)
    axes.set_xlim(0, 1.15 * max(means + spreads, default=1.0))
    axes.set(xlabel="%", title=title)
    axes.grid(axis="x", alpha=0.3)
