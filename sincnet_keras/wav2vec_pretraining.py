"""Self-supervised pretraining of the wav2vec 2.0 feature encoder, without speaker labels.

Task: wav2vec 1.0's future-step prediction (Schneider, Baevski, Collobert and
Auli, "wav2vec: Unsupervised Pre-training for Speech Recognition", Interspeech
2019). The encoder turns audio into frames `z`; a small causal convolutional
context network turns them into `c`; for each step `k = 1..K` a linear map
`h_k` predicts the frame `k` steps ahead, which must be told apart from `N`
distractor frames drawn from the same sequence.

Loss: wav2vec 2.0's contrastive form (Baevski et al., NeurIPS 2020): cosine
similarity over a temperature, softmax over the true frame and the distractors,

    L_k = -mean_t log( exp(cos(h_k(c[t]), z[t+k]) / T) / sum over {z[t+k], distractors} exp(cos(...) / T) )

Why this pair: wav2vec 2.0's masked objective needs a Transformer context network
and a Gumbel-softmax quantiser, far beyond a 2-core CPU's budget, while wav2vec
1.0's task trains the very same kind of convolutional encoder with a context
network of a few convolutions. wav2vec 1.0's own binary logistic loss on raw dot
products collapsed here: the encoder learnt to output a constant, which scores
every candidate alike and already halves that loss. With cosine similarity a
constant output only reaches the chance level log(N + 1), so the encoder must
tell frames apart to go lower. Only the encoder is kept afterwards.
"""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="sincnet_keras")
class FuturePredictionLoss(keras.layers.Layer):
    """Adds the future-prediction contrastive loss for encoder frames `z` and context frames `c`.

    Args:
        prediction_steps: K, how many frames ahead are predicted (one linear map each).
        num_negatives: N, distractor frames per prediction, drawn uniformly from the
            same sequence (shared by all K steps, to keep memory linear in N); a
            distractor that happens to be the true frame is left out.
        temperature: divides the cosine similarities (0.1, as in wav2vec 2.0).
        seed: seeds the distractor draws.

    Input: `[z, c]`, shapes `(batch, frames, D)` and `(batch, frames, C)`; frames > K.
    Output: the share of predictions whose true frame outscores every distractor,
    `(batch,)`, a readable progress figure (chance is about 1 / (N + 1)).
    """

    def __init__(self, prediction_steps=12, num_negatives=10, temperature=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.prediction_steps = int(prediction_steps)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        z_shape, c_shape = input_shape
        self.predictors = layers.Dense(self.prediction_steps * z_shape[-1], name="predictors")
        self.predictors.build(c_shape)

    def call(self, inputs):
        z, c = inputs
        batch, frames, depth = ops.shape(z)[0], ops.shape(z)[1], ops.shape(z)[2]
        unit_z = z / (ops.norm(z, axis=-1, keepdims=True) + 1e-6)
        # Distractors: N frame indices per frame, from the same sequence.
        picks = keras.random.randint((batch, frames, self.num_negatives), 0, frames, seed=self.seed_generator)
        offsets = ops.reshape(ops.arange(batch) * frames, (-1, 1, 1))
        distractors = ops.take(ops.reshape(unit_z, (-1, depth)), ops.reshape(picks + offsets, (-1,)), axis=0)
        distractors = ops.reshape(distractors, (batch, frames, self.num_negatives, depth))
        predictions = ops.reshape(self.predictors(c), (batch, frames, self.prediction_steps, depth))
        predictions = predictions / (ops.norm(predictions, axis=-1, keepdims=True) + 1e-6)
        positions = ops.reshape(ops.arange(frames), (1, -1, 1))
        losses, correct = [], []
        for step in range(1, self.prediction_steps + 1):
            predicted = predictions[:, :-step, step - 1]  # (batch, frames - step, D)
            positive = ops.sum(predicted * unit_z[:, step:], axis=-1) / self.temperature  # (batch, frames - step)
            negative = ops.einsum("btd,btnd->btn", predicted, distractors[:, step:]) / self.temperature
            is_target = ops.equal(picks[:, step:], positions[:, step:])  # the true frame drawn as a distractor
            negative = ops.where(is_target, -1e9, negative)
            logits = ops.concatenate([positive[..., None], negative], axis=-1)  # (batch, frames - step, 1 + N)
            losses.append(ops.mean(ops.logsumexp(logits, axis=-1) - positive, axis=1))
            correct.append(ops.mean(ops.cast(positive > ops.max(negative, axis=-1), "float32"), axis=1))
        self.add_loss(ops.mean(ops.sum(ops.stack(losses, axis=1), axis=1)))
        return ops.mean(ops.stack(correct, axis=1), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "prediction_steps": self.prediction_steps,
                "num_negatives": self.num_negatives, "temperature": self.temperature, "seed": self.seed}


def build_context_network(depth, num_layers=4, kernel_size=3, name="context"):
    """wav2vec 1.0's context network, shortened: causal Conv1D -> LayerNorm -> ReLU blocks.

    Causal padding and per-frame LayerNorm keep `c[t]` blind to frames after `t`,
    so predicting `z[t + k]` cannot be solved by looking at it.
    """
    frames = keras.Input(shape=(None, depth), name="frames")
    x = frames
    for index in range(num_layers):
        x = layers.Conv1D(depth, kernel_size, padding="causal", name=f"{name}_conv{index}")(x)
        x = layers.LayerNormalization(name=f"{name}_norm{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return keras.Model(frames, x, name=name)


def build_pretrainer(encoder, context_layers=4, prediction_steps=12, num_negatives=10, seed=None):
    """The pretraining model: waveform -> encoder -> context -> future-prediction loss.

    Train it with `compile(optimizer)` and `fit(waveforms)`; the loss is added by
    `FuturePredictionLoss`, and the model's output is its prediction accuracy.
    `encoder` is shared, so training this model trains it.
    """
    waveform = keras.Input(shape=(None, 1), name="waveform")
    z = encoder(waveform)
    c = build_context_network(encoder.output_shape[-1], num_layers=context_layers)(z)
    accuracy = FuturePredictionLoss(prediction_steps, num_negatives, seed=seed, name="future_prediction")([z, c])
    return keras.Model(waveform, accuracy, name="wav2vec_pretrainer")


def encoder_of(pretrainer):
    """The feature encoder inside a pretraining model (its first nested model)."""
    return next(layer for layer in pretrainer.layers if isinstance(layer, keras.Model))
