"""Diarization speed on long recordings built from held-out speakers.

    python -m experiments.benchmark [--minutes 5] [--model M]
    python -m experiments.benchmark --peer resemblyzer   # side by side with a peer system

For each length, concatenates simulated conversations of test speakers into one
recording (wav + exact RTTM), diarizes it end to end (decode, speech
detection, embeddings, clustering) with the model already loaded and warmed
up (`Diarizer.warm_up`: the frame model compiled for every chunk length, as in a
long-running process; `--repeats` times, the median run reported), and prints wall time,
real-time factor (wall time / audio duration), peak resident memory of the
process that diarized it (a fresh one per length), the
seconds spent in each step (`Diarizer.stage_seconds`) and the DER (full setting,
estimated count; long recordings reuse the same test speakers across many
conversations, so their speaker count is large).

With `--peer`, the peer's embeddings go through the same speech detection and
clustering (experiments/peers.py), and both systems are measured in one run on
the run's held-out data, as experiments.release builds it: thresholds calibrated
on validation speakers, then EER on the test trials, DER on the test
conversations, the real-time factor of each step on the test conversations
(how much of the time the embeddings take) and on the long recording; the
table, with the peer/project ratios, also goes to `--report`.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import experiments  # noqa: F401  (quiets TensorFlow before it is imported)
from experiments.config import ConfigError, load_config
from experiments.quickstart import DEFAULT_CONFIG

PEERS = ("resemblyzer",)  # = experiments.peers.PEERS, named here so that --help does not load TensorFlow


def concatenated_conversations(manifest, minutes, parts_dir, sample_rate, first_seed, **simulate_kwargs):
    """`(audio, turns)`: seeded simulated conversations (seeds `first_seed`, `first_seed + 1`, ...) played one
    after another until `minutes` of audio, with their turns `(start_s, end_s, speaker)` on the joint timeline."""
    import numpy as np

    from data_prep.audio import load_audio
    from data_prep.rttm import read_rttm
    from data_prep.simulate import write_conversations

    pieces, turns, offset_s, index = [], [], 0.0, 0
    while offset_s < minutes * 60:
        part = write_conversations(manifest, parts_dir, num_conversations=1, seed=first_seed + index,
                                   sample_rate=sample_rate, **simulate_kwargs).iloc[0]
        audio = load_audio(part["wav_path"], sample_rate)
        for segment, _, speaker in read_rttm(part["rttm_path"])[part["uri"]].itertracks(yield_label=True):
            turns.append((offset_s + segment.start, offset_s + segment.end, speaker))
        pieces.append(audio)
        offset_s += len(audio) / sample_rate
        index += 1
    return np.concatenate(pieces), turns


def long_recording(manifest, minutes, out_dir, sample_rate, seed):
    """Concatenates seeded conversations until `minutes` of audio; returns (wav, rttm) paths."""
    from data_prep.audio import write_wav
    from data_prep.rttm import write_rttm
    from data_prep.simulate import turns_to_annotation

    uri = f"long_{minutes:g}min"
    wav, rttm = out_dir / f"{uri}.wav", out_dir / f"{uri}.rttm"
    if wav.is_file() and rttm.is_file():
        return wav, rttm
    audio, turns = concatenated_conversations(manifest, minutes, out_dir / "parts", sample_rate, seed)
    write_wav(wav, audio, sample_rate)
    write_rttm(turns_to_annotation(turns, uri), rttm)
    return wav, rttm


def peak_rss_mb():
    """Peak resident memory of this process, in MB.

    Linux's ru_maxrss in a spawned process also counts the parent's peak before the
    exec (a parent holding TensorFlow or a long recording inflates it); VmHWM counts
    only this program's own memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(model, shared_frames, wav, uri, peer=None, repeats=1):
    """Runs in a fresh process: load the model, warm up, time `repeats` diarizations, report peak RSS.

    Returns the median run's wall time and step seconds: on a shared CPU one timing can be 40% off.
    With `peer`, `model` is the peer's settings file instead (experiments.peers).
    """
    from data_prep.audio import load_audio
    from siamese.diarizer import Diarizer

    if peer:
        from experiments.peers import load_peer

        diarizer = load_peer(peer, model)
    else:
        diarizer = Diarizer.load(model)
    if shared_frames is not None:
        diarizer.settings.shared_frames = shared_frames
    diarizer.warm_up()  # the frame model compiled for every chunk length, as a long-running process has it
    diarizer.diarize(load_audio(wav, diarizer.settings.sample_rate, duration_s=60.0), uri="warmup")  # not timed
    runs = []
    for _ in range(max(1, repeats)):
        diarizer.forget()  # a repeat must cluster again, not remember the first run's labels
        started = time.perf_counter()
        hypothesis = diarizer.diarize(wav, uri=uri)
        runs.append((time.perf_counter() - started, dict(diarizer.stage_seconds)))
    wall_s, stage_s = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return wall_s, peak_rss_mb(), hypothesis, diarizer.settings.shared_frames, stage_s


STAGES = ("decode", "speech", "embeddings", "clustering", "turns")  # Diarizer.stage_seconds keys, in pipeline order


def stage_rtf(diarizers, paths):
    """Real-time factor of each step of one diarization per file over `paths`, for each of `diarizers`.

    One system after the other, each warm and without remembered clusterings. Taking turns file by
    file was tried and is worse: torch's worker threads keep spinning for a while after each call and
    slowed the project's steps that followed by about 2x.
    """
    import soundfile

    duration_s = sum(soundfile.info(str(path)).duration for path in paths)
    shares = []
    for diarizer in diarizers:
        diarizer.warm_up()
        diarizer.diarize(paths[0], uri="warmup")
        diarizer.forget()  # a clustering seen while scoring would cost nothing here
        for path in paths:
            diarizer.diarize(path)
        shares.append({stage: diarizer.stage_seconds.get(stage, 0.0) / duration_s for stage in STAGES})
    return shares


def score_system(diarizer, data):
    """EER on the test trials and DER summary rows on the test conversations."""
    from experiments.evaluate import (
        annotated_recordings,
        score_recordings,
        score_trials,
        summarize,
    )
    from siamese.metrics import DER_SETTINGS

    conversations, trials = data["test"]
    verification = score_trials(diarizer, trials)
    rows = score_recordings(diarizer, annotated_recordings(conversations, conversations), DER_SETTINGS)
    summary = {(row["setting"], row["speakers"]): row for row in summarize(rows)}
    if data.get("test_many"):  # the release's conversations of 5-8 speakers
        many = data["test_many"]
        rows = score_recordings(diarizer, annotated_recordings(many, many), {"full": DER_SETTINGS["full"]})
        summary.update({("full many", row["speakers"]): row for row in summarize(rows)})
    if data.get("test_rooms"):  # the release's conversations in reverberant rooms
        rooms = data["test_rooms"]
        rows = score_recordings(diarizer, annotated_recordings(rooms, rooms), DER_SETTINGS)
        summary.update({(f"{row['setting']} rooms", row["speakers"]): row for row in summarize(rows)})
    return verification, summary


def comparison_rows(scores, speed, speakers, stages=None, repeats=1):
    """[(measure, condition, project value, peer value, unit)] for the side-by-side table."""
    (project_trials, project_der), (peer_trials, peer_der) = scores
    rows = [("EER", f"{project_trials['trials']} test trials of 2 s segments", project_trials["eer"], peer_trials["eer"], "%")]
    conditions = {"full": "collar 0, overlap scored", "forgiving": "collar 0.25 s, overlap skipped"}
    for setting in ("full", "forgiving"):
        for count in ("estimated", "oracle"):
            files = project_der[(setting, count)]["files"]
            rows.append((f"DER {setting}", f"{conditions[setting]}, {count} count, {files} test conversations",
                         project_der[(setting, count)]["der"], peer_der[(setting, count)]["der"], "%"))
    rows.append(("speaker count exact", "estimated count", project_der[("full", "estimated")]["count_exact"],
                 peer_der[("full", "estimated")]["count_exact"], "%"))
    if ("full many", "estimated") in project_der and ("full many", "estimated") in peer_der:
        for count in ("estimated", "oracle"):
            files = project_der[("full many", count)]["files"]
            rows.append(("DER full", f"{conditions['full']}, {count} count, {files} test conversations of 5-8 speakers",
                         project_der[("full many", count)]["der"], peer_der[("full many", count)]["der"], "%"))
        rows.append(("speaker count exact", f"estimated count, {files} test conversations of 5-8 speakers",
                     project_der[("full many", "estimated")]["count_exact"],
                     peer_der[("full many", "estimated")]["count_exact"], "%"))
    if ("full rooms", "estimated") in project_der and ("full rooms", "estimated") in peer_der:
        for setting, count in (("full", "estimated"), ("full", "oracle"), ("forgiving", "estimated")):
            files = project_der[(f"{setting} rooms", count)]["files"]
            rows.append((f"DER {setting}", f"{conditions[setting]}, {count} count, {files} test conversations in rooms",
                         project_der[(f"{setting} rooms", count)]["der"], peer_der[(f"{setting} rooms", count)]["der"], "%"))
        rows.append(("speaker count exact", f"estimated count, {files} test conversations in rooms",
                     project_der[("full rooms", "estimated")]["count_exact"],
                     peer_der[("full rooms", "estimated")]["count_exact"], "%"))
    rows.append(("RTF, conversations", "mean per test conversation, in process (decode to clustering)",
                 project_der[("full", "estimated")]["rtf"], peer_der[("full", "estimated")]["rtf"], "x"))
    if stages:
        project_stages, peer_stages = stages
        shared = [stage for stage in STAGES if stage != "embeddings"]
        rows.append(("RTF, conversations: embeddings", "all test conversations again, one system after the other",
                     project_stages["embeddings"], peer_stages["embeddings"], "x"))
        rows.append(("RTF, conversations: the other steps", f"same pass: {', '.join(shared)}",
                     sum(project_stages[stage] for stage in shared), sum(peer_stages[stage] for stage in shared), "x"))
        rows.append(("RTF, conversations: all steps", "same pass: total time / total audio",
                     sum(project_stages.values()), sum(peer_stages.values()), "x"))
    for length, reference_speakers in speakers.items():
        (wall, peak, der, found), (peer_wall, peer_peak, peer_der_long, peer_found) = speed[length]
        rows += [(f"RTF, {length:g} min", f"end to end, warm, fresh process per system, median of {repeats}",
                  wall[1], peer_wall[1], "x"),
                 (f"wall time, {length:g} min", "seconds", wall[0], peer_wall[0], "s"),
                 (f"peak RSS, {length:g} min", "MB, whole process", peak, peer_peak, "MB"),
                 (f"DER full, {length:g} min", (f"estimated count, one long recording of {reference_speakers} speakers "
                  f"(found: {found} / {peer_found})"), der, peer_der_long, "%")]
    return rows


def comparison_table(rows, project_name, peer_name):
    """Markdown table with the peer - project difference and the peer / project ratio."""
    formats = {"%": lambda v: f"{v:.2%}", "x": lambda v: f"{v:.4f}", "s": lambda v: f"{v:.1f}", "MB": lambda v: f"{v:.0f}"}
    lines = [f"| measure | condition | {project_name} | {peer_name} | {peer_name} - {project_name} | {peer_name} / {project_name} |",
             "|---|---|---|---|---|---|"]
    for measure, condition, project, peer, unit in rows:
        show = formats[unit]
        sign = "+" if peer >= project else "-"
        difference = f"{(peer - project) * 100:+.2f} pts" if unit == "%" else sign + show(abs(peer - project))
        ratio = f"{peer / project:.2f}" if project else "n/a"
        lines.append(f"| {measure} | {condition} | {show(project)} | {show(peer)} | {difference} | {ratio} |")
    return "\n".join(lines) + "\n"


def describe(values):
    """`{"method": "webrtc"}` -> "method webrtc", for the report; nested settings in parentheses."""
    return ", ".join(f"{key} ({describe(value)})" if isinstance(value, dict) else f"{key} {value}"
                     for key, value in values.items())


def calibrated(settings):
    """What calibration on validation speakers chose, in words."""
    from experiments.release import count_correction

    text = (f"window {settings.window_s} s, clustering threshold {settings.threshold}{count_correction(settings)}, "
            f"smallest speaker {settings.min_cluster_s} s, clustering compares {settings.cluster_window_s or settings.window_s} s "
            f"windows averaged with {settings.smooth_windows} neighbours either side, "
            f"verification threshold {settings.verification_threshold}")
    resegment = getattr(settings, "resegment", None)
    return text + (f", switch penalty {resegment['switch_penalty']}" if resegment else "")


def side_by_side(args, argv):
    """The model and a peer on the same held-out data in one run: EER, DER, RTF and their ratios."""
    import multiprocessing
    import os
    from datetime import date
    from importlib.metadata import version

    import soundfile

    from data_prep.audio import AudioError, atomic_path
    from data_prep.rttm import read_rttm
    from experiments.calibrate import by_count
    from experiments.train import prepare_manifests
    from siamese.diarizer import DEFAULT_MODEL, Diarizer, sidecar_path
    from siamese.metrics import DER_SETTINGS, diarization_error

    model = Path(args.model) if args.model else DEFAULT_MODEL
    shared = None if args.shared_frames is None else args.shared_frames == "on"
    try:
        from experiments.peers import calibrated_peer, heldout_data, import_resemblyzer

        import_resemblyzer()  # before any work: a missing extra is one clear line
        config = load_config(args.config)
        run_dir = Path(args.run or config["output_dir"])
        manifests = prepare_manifests(config, run_dir)
        project = Diarizer.load(model)
        rate = project.settings.sample_rate
        data = heldout_data(manifests, run_dir / "heldout", rate)
        peer_settings = run_dir / "peers" / f"{args.peer}.json"
        peer, calibration = calibrated_peer(args.peer, peer_settings, sidecar_path(model), *data["val"],
                                            many=data["val_many"], recalibrate=args.recalibrate,
                                            rooms=data["val_rooms"])
        print(f"{args.peer}: window {peer.settings.window_s} s, clustering threshold {peer.settings.threshold}, "
              f"verification threshold {peer.settings.verification_threshold} (validation DER full, estimated count "
              f"{calibration['val_der_full_estimated']:.2%}, EER {calibration['val_eer']:.2%})", flush=True)
        scores = []
        for name, diarizer in ((model.stem, project), (args.peer, peer)):
            print(f"{name}: scoring test trials and conversations ...", end=" ", flush=True)
            started = time.perf_counter()
            scores.append(score_system(diarizer, data))
            print(f"{time.perf_counter() - started:.0f} s", flush=True)
        print("timing each step on the test conversations ...", flush=True)
        paths = sorted(Path(data["test"][0]).glob("*.wav"))
        stages = stage_rtf((project, peer), paths)
        speed, speakers, context = {}, {}, multiprocessing.get_context("spawn")
        for minutes in args.minutes:
            wav, rttm = long_recording(manifests["test"], minutes, run_dir / "heldout", rate, args.seed)
            reference = next(iter(read_rttm(rttm).values()))
            duration_s = soundfile.info(str(wav)).duration
            speed[minutes] = []
            systems = ((model.stem, model, shared, None), (args.peer, peer_settings, None, args.peer))
            for name, path, shared_frames, peer_name in systems:
                print(f"{name}: timing {minutes:g} min in a fresh process ...", flush=True)
                with context.Pool(1) as pool:
                    wall_s, peak_mb, hypothesis, _, _ = pool.apply(measure, (str(path), shared_frames, str(wav), reference.uri,
                                                                           peer_name, args.repeats))
                der = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])["der"]
                speed[minutes].append(((wall_s, wall_s / duration_s), peak_mb, der, len(hypothesis.labels())))
            speakers[minutes] = len(reference.labels())
    except (ConfigError, OSError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = comparison_table(comparison_rows(scores, speed, speakers, stages, args.repeats), model.stem, args.peer)
    command = " ".join(["python -m experiments.benchmark", *(sys.argv[1:] if argv is None else argv)])
    s, p = project.settings, peer.settings
    steps = {key: getattr(s, key) for key in ("clustering", "center") if hasattr(s, key)}
    if getattr(s, "resegment", None):  # its switch penalty (and smallest speaker) are calibrated per system, see below
        steps["resegment"] = {key: value for key, value in s.resegment.items() if key != "switch_penalty"}
    report = f"""# Peer benchmark: `{model.stem}` and {args.peer} {version(args.peer)}

Measured on {date.today().isoformat()} with `{command}`
on {os.cpu_count()} CPU threads (timings are approximate when other work shares the machine).

Both systems use the same pipeline and scoring, only the embedding of each window differs: speech detection
({describe(s.vad)}), windows every {s.hop_s} s, speaker count from the {s.linkage}-linkage threshold, then
{describe(steps)}. Data: `{run_dir}/heldout/`, test speakers never seen in training or calibration; long
recordings reuse the same test speakers across many conversations.

Settings come from validation speakers only. `{model.stem}` (its sidecar, from experiments.release):
{calibrated(s)}. {args.peer} (calibrated the same way, `{peer_settings}`): {calibrated(p)}; validation DER full
(estimated count) {calibration['val_der_full_estimated']:.2%}{by_count(calibration)}, validation EER {calibration['val_eer']:.2%}.

{table}
Speed rows: "RTF, conversations" is the mean of the conversations' real-time factors while they are scored; the
three rows after it come from a second pass over the same conversations, one system after the other, each step
timed (`Diarizer.stage_seconds`). The other steps run the same code for both systems, so their time is a floor
under any embedding's. The long-recording rows time the recording {args.repeats} times after a warm-up, in a fresh
process per system, and give the median.
"""
    print(table, end="")
    with atomic_path(args.report) as tmp:
        tmp.write_text(report)
    print(f"wrote {args.report}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0], help="recording lengths in minutes (default 5)")
    parser.add_argument("--model", help="embedding tower .keras (default: the shipped model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="config whose split defines the test speakers")
    parser.add_argument("--out-dir", default="runs/benchmark", help="folder for the built recordings (without --peer)")
    parser.add_argument("--seed", type=int, default=7000, help="seed of the simulated conversations of the long recordings")
    parser.add_argument("--repeats", type=int, default=3, help="timed diarizations of each long recording after "
                        "the warm-up; the median is reported (default 3)")
    parser.add_argument("--shared-frames", choices=("on", "off"), help="override the model's shared_frames setting")
    parser.add_argument("--peer", choices=PEERS, help="also measure this peer system side by side with the model "
                        "(install it as requirements-peers.txt says)")
    parser.add_argument("--run", help="with --peer: run folder whose heldout/ data is used or built "
                        "(default: the config's output_dir)")
    parser.add_argument("--recalibrate", action="store_true", help="with --peer: calibrate the peer again "
                        "even if <run>/peers/<peer>.json exists")
    parser.add_argument("--report", default="results/peer_benchmark.md", help="with --peer: Markdown report path")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.peer:
        return side_by_side(args, argv)
    import multiprocessing
    import os

    import soundfile

    from data_prep.rttm import read_rttm
    from experiments.train import prepare_manifests
    from siamese.diarizer import DEFAULT_MODEL, DiarizerSettings, sidecar_path
    from siamese.metrics import DER_SETTINGS, diarization_error

    out_dir = Path(args.out_dir)
    model = Path(args.model) if args.model else DEFAULT_MODEL
    try:
        manifests = prepare_manifests(load_config(args.config), out_dir)
        sample_rate = DiarizerSettings.from_file(sidecar_path(model)).sample_rate
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    shared = None if args.shared_frames is None else args.shared_frames == "on"
    print(f"model: {model}; CPU threads available: {os.cpu_count()}; each length diarized in a fresh process "
          f"(peak RSS = TensorFlow + model + diarization), median of {args.repeats} timed runs after a warm-up")
    print(f"{'minutes':>8} {'shared':>7} {'wall s':>8} {'RTF':>8} {'peak RSS MB':>12} {'DER full':>9} {'speakers ref/hyp':>17}"
          + "".join(f" {stage + ' s':>13}" for stage in STAGES))
    context = multiprocessing.get_context("spawn")
    for minutes in args.minutes:
        wav, rttm = long_recording(manifests["test"], minutes, out_dir, sample_rate, args.seed)
        reference = next(iter(read_rttm(rttm).values()))
        with context.Pool(1) as pool:
            wall_s, peak_mb, hypothesis, used_shared, stage_s = pool.apply(measure, (str(model), shared, str(wav),
                                                                                       reference.uri, None, args.repeats))
        duration_s = soundfile.info(str(wav)).duration
        der = diarization_error(reference, hypothesis, **DER_SETTINGS["full"])["der"]
        print(f"{minutes:8g} {used_shared!s:>7} {wall_s:8.2f} {wall_s / duration_s:8.4f} {peak_mb:12.0f} {der:9.2%} "
              f"{len(reference.labels()):>8}/{len(hypothesis.labels()):<8}"
              + "".join(f" {stage_s.get(stage, 0.0):13.2f}" for stage in STAGES), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
