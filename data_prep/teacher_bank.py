"""Teacher banks: a pretrained peer's embedding of every training window, for distillation.

A bank holds, for each utterance of a manifest, the teacher's embeddings of
windows of `window_s` every `hop_s` (near-silent windows left out). It is
computed once with the teacher's own framework (torch, for Resemblyzer) and
saved as `.npz`; training reads it with numpy alone, so the student tower never
needs the teacher. `teacher_dataset` then feeds `(crop, teacher embedding)`
batches: the student hears a crop (with background noise, like any training
crop) and is taught what the teacher heard in the clean window it was cut from.
"""

import numpy as np
from tqdm import tqdm

from data_prep.audio import atomic_path, normalize_level
from data_prep.augment import REVERB_RT60_S
from data_prep.manifest import load_utterance, utterance_spans
from data_prep.pipeline import frame_activity, maybe_augmented, utterance_cache

MIN_ACTIVITY = 0.6  # as training crops: windows with fewer active frames are left out of the bank


def utterance_keys(manifest):
    """One key per manifest row (file and offset), so a bank matches rows however the manifest is ordered."""
    offsets, _ = utterance_spans(manifest)
    return [f"{path}|{offset:.3f}" for path, offset in zip(manifest["path"].astype(str), offsets)]


def build_teacher_bank(manifest, embed, *, sample_rate, window_s, hop_s, teacher="", progress=True):
    """The teacher's embeddings of every window of every utterance.

    Args:
        manifest: utterance manifest (`path`, `duration_s`, optional `start_s`/`end_s`).
        embed: `embed(audio, starts_s) -> (windows, D)`, the teacher's embeddings of the
            `window_s` windows of one utterance starting at `starts_s`.
        sample_rate, window_s, hop_s: the rate, length and spacing of the windows.
        teacher: what the embeddings come from (stored, so a bank is never silently reused
            for another teacher).

    Returns:
        A dict of arrays: `keys` (per utterance), `utterance` (index into `keys`),
        `start` (window start in samples) and `embedding` (float16, `(windows, D)`),
        plus its settings. An utterance keeps at least its most active window.
    """
    length, hop = int(round(window_s * sample_rate)), max(1, int(round(hop_s * sample_rate)))
    offsets, lengths = utterance_spans(manifest)
    utterance, starts, embeddings = [], [], []
    rows = tqdm(range(len(manifest)), desc="teacher bank", unit="utt", disable=not progress)
    for row in rows:
        audio = normalize_level(load_utterance(manifest["path"].iat[row], sample_rate, offsets[row], lengths[row]))
        audio = np.pad(audio, (0, max(0, length - len(audio))))
        candidates = np.arange(0, len(audio) - length + 1, hop)
        activity = np.array([frame_activity(audio[start:start + length], sample_rate) for start in candidates])
        kept = candidates[activity >= MIN_ACTIVITY]
        if len(kept) == 0:
            kept = candidates[[int(np.argmax(activity))]]
        utterance.append(np.full(len(kept), row, np.int64))
        starts.append(kept.astype(np.int64))
        embeddings.append(np.asarray(embed(audio, kept / sample_rate), np.float32))
    return {"keys": np.array(utterance_keys(manifest)), "utterance": np.concatenate(utterance),
            "start": np.concatenate(starts), "embedding": np.concatenate(embeddings).astype(np.float16),
            "sample_rate": np.int64(sample_rate), "window_s": np.float64(window_s), "hop_s": np.float64(hop_s),
            "teacher": np.str_(teacher)}


def save_teacher_bank(bank, path):
    """Writes a bank as one `.npz`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **bank)


def load_teacher_bank(path, manifest, *, sample_rate, window_s, hop_s, teacher):
    """Per manifest row, `(window starts, embeddings)` from a saved bank.

    Raises ValueError when the bank was made with other settings or another teacher,
    or lacks an utterance of the manifest (it was built for other data).
    """
    with np.load(path, allow_pickle=False) as stored:
        bank = {name: stored[name] for name in stored.files}
    made = (int(bank["sample_rate"]), float(bank["window_s"]), float(bank["hop_s"]), str(bank["teacher"]))
    if made != (int(sample_rate), float(window_s), float(hop_s), str(teacher)):
        raise ValueError(f"{path}: teacher bank made with (rate, window, hop, teacher) = {made}, the config asks for "
                         f"{(sample_rate, window_s, hop_s, teacher)}; delete it to rebuild")
    where = {key: index for index, key in enumerate(bank["keys"])}
    missing = [key for key in utterance_keys(manifest) if key not in where]
    if missing:
        raise ValueError(f"{path}: no teacher embeddings for {len(missing)} utterance(s) of the manifest, "
                         f"e.g. {missing[0]}; delete it to rebuild")
    order = np.argsort(bank["utterance"], kind="stable")
    bounds = np.searchsorted(bank["utterance"][order], np.arange(len(bank["keys"]) + 1))
    windows = []
    for key in utterance_keys(manifest):
        chosen = order[bounds[where[key]]:bounds[where[key] + 1]]
        windows.append((bank["start"][chosen], bank["embedding"][chosen].astype(np.float32)))
    return windows


def project_teacher_windows(banks, dims):
    """Every split's teacher embeddings on the training bank's `dims` main directions; also the energy kept.

    For a student narrower than its teacher (`training.embedding_weight` compares the two
    embeddings). The directions are the top right singular vectors of the *uncentred*
    training embeddings, so dot products, hence cosines, are kept as well as `dims`
    directions can keep them. Each direction's sign is fixed (its largest component is
    positive), so every machine, resume and worker gets the same targets, whatever sign
    its LAPACK picks.

    Args:
        banks: `{split: [(starts, embeddings), ...]}`, as `load_teacher_bank` returns per split.
        dims: the student's embedding size, at most the teacher's.

    Returns:
        `(projected banks, share of the training embeddings' energy kept)`.
    """
    train = np.concatenate([embeddings for _, embeddings in banks["train"]]).astype(np.float64)
    if not 1 <= dims <= train.shape[1]:
        raise ValueError(f"cannot project {train.shape[1]}-dimensional teacher embeddings to {dims} dimensions")
    _, singular, directions = np.linalg.svd(train, full_matrices=False)
    directions = directions[:dims]
    largest = directions[np.arange(dims), np.argmax(np.abs(directions), axis=1)]
    basis = (directions * np.sign(largest)[:, None]).T.astype(np.float32)  # shape: (D_teacher, dims)
    kept = float(np.sum(singular[:dims] ** 2) / np.sum(singular**2))
    projected = {split: [(starts, embeddings @ basis) for starts, embeddings in windows]
                 for split, windows in banks.items()}
    return projected, kept


def init_signs(tower, manifest, windows, *, sample_rate, window_s, rows=60, every=5, seed=0):
    """+1 or -1 for each projected teacher direction: the sign `tower`'s embeddings agree with.

    A projection's signs are arbitrary (`project_teacher_windows` fixes one choice). A tower
    already distilled against other signs (one to fine-tune) would be pulled away from what it
    learned, so its own embeddings of clean bank windows (every `every`-th window of `rows`
    seeded utterances) choose: each direction keeps the sign whose targets they agree with.
    """
    length = int(round(window_s * sample_rate))
    offsets, lengths = utterance_spans(manifest)
    paths = manifest["path"].astype(str).to_numpy()
    crops, targets = [], []
    for row in np.random.default_rng(seed).choice(len(windows), min(rows, len(windows)), replace=False):
        starts, embeddings = windows[row]
        audio = load_utterance(paths[row], sample_rate, offsets[row], lengths[row])
        for pick in range(0, len(starts), every):
            crop = audio[int(starts[pick]):int(starts[pick]) + length]
            if len(crop) == length:
                crops.append(normalize_level(crop))
                targets.append(embeddings[pick])
    if not crops:
        raise ValueError("no bank window to compare the tower's embeddings with")
    student = np.asarray(tower.predict(np.stack(crops)[..., None].astype(np.float32), batch_size=64, verbose=0))
    agreement = np.sum(student * np.stack(targets), axis=0)  # shape: (dims,)
    return np.where(agreement < 0, -1.0, 1.0).astype(np.float32)


def teacher_dataset(manifest, crops, windows, *, sample_rate, window_s, hop_s, batch_size, noise_prob=0.0,
                    noise_snr_db=(5.0, 30.0), cache_mb=2048, with_speaker=False, reverb_prob=0.0,
                    reverb_rt60_s=REVERB_RT60_S):
    """A `tf.data.Dataset` of `(crops, teacher embeddings)` batches for distillation.

    Args:
        manifest: utterance manifest.
        crops: table from `data_prep.pairs.sample_speaker_batches` (`row`, `speaker`, `crop_seed`),
            in batch order: each crop is one bank window of its row, chosen by its seed.
        windows: `load_teacher_bank`'s per-row `(starts, embeddings)`.
        hop_s: the bank's hop; a crop starts up to half a hop before or after its window,
            whose teacher embedding it keeps.
        noise_prob, noise_snr_db, cache_mb, reverb_prob, reverb_rt60_s: as `data_prep.pipeline.crop_loader`
            (`utterance_cache`, `maybe_augmented`). The teacher's targets stay those of the clean crops.
        with_speaker: append each crop's speaker code (from `crops`) to its target, as
            `siamese.losses.RelationalDistillationLoss(contrastive_weight > 0)` expects.

    Shapes: crops `(batch, window_samples, 1)`, embeddings `(batch, D)` (`D + 1` with the speaker).
    """
    import tensorflow as tf

    length, half_hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate / 2))
    offsets, lengths = utterance_spans(manifest)
    paths = manifest["path"].astype(str).to_numpy()
    cached = utterance_cache(manifest, sample_rate=sample_rate, cache_mb=cache_mb)
    dim = windows[0][1].shape[1] + int(with_speaker)

    def utterance(row):
        audio = cached(row)
        return load_utterance(paths[row], sample_rate, offsets[row], lengths[row]) if audio is None else audio

    def load_batch(rows, speakers, crop_seed):
        audio = np.zeros((len(rows), length, 1), np.float32)
        targets = np.zeros((len(rows), dim), np.float32)
        targets[:, -1] = speakers  # overwritten by the embeddings unless with_speaker
        for index, (row, seed) in enumerate(zip(rows, crop_seed)):
            rng = np.random.default_rng(int(seed))
            starts, embeddings = windows[row]
            pick = int(rng.integers(len(starts)))
            whole = utterance(row)
            start = int(np.clip(starts[pick] + rng.integers(-half_hop, half_hop + 1), 0, max(0, len(whole) - length)))
            crop = normalize_level(np.pad(whole[start:start + length], (0, max(0, start + length - len(whole)))))
            audio[index, :, 0] = maybe_augmented(crop, rng, noise_prob, noise_snr_db, reverb_prob, reverb_rt60_s,
                                                 sample_rate)
            targets[index, :embeddings.shape[1]] = embeddings[pick]
        return audio, targets

    def tf_load_batch(rows, speakers, crop_seed):
        audio, targets = tf.numpy_function(load_batch, [rows, speakers, crop_seed], [tf.float32, tf.float32],
                                           stateful=False)
        audio.set_shape((None, length, 1))
        targets.set_shape((None, dim))
        return audio, targets

    columns = tuple(crops[name].to_numpy(dtype=np.int64) for name in ("row", "speaker", "crop_seed"))
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size, drop_remainder=True)
    dataset = dataset.map(tf_load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
