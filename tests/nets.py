"""Small Flax CNNs written as a user would: the models of the own-model and tuning tests."""

import flax.linen as nn


class TinyCNN(nn.Module):
    """Two 3x3 ReLU convs, global average pooling and a dense classifier."""

    features: int = 8
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", name="c1")(x))
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", name="c2")(x))
        return nn.Dense(self.classes, name="fc")(x.mean(axis=(1, 2)))
