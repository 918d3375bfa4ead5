"""A timm CNN rebuilt in Keras with the same weights, distilled by layer name: the Distiller's
objective equals the PyTorch reference (tests/torch_objective.py) on timm's own forward."""

import keras
import numpy as np
import pytest
import timm
import torch
from torch import nn

import torch_objective as ref  # tests/torch_objective.py: the PyTorch oracle
from keras_spectralkd import Distiller

SIZE = 64
SETTINGS = dict(alpha=0.6, beta=1.0, spectral_weight=0.2, temperature=2.0, label_smoothing=0.1)
# (student layer, teacher layer): 8x8x48 <- 8x8x48 and 2x2x96 <- 2x2x96 at 64x64 (timm's
# test_resnet: basic blocks, a bottleneck in stage 3, avg-pool downsampling, a deep stem).
PAIRS = [("layer2", "layer2"), ("layer4", "layer4")]


# === timm ResNet -> Keras functional model, weight for weight ===
class _Rebuild:
    """Walks a timm ResNet and lays down the same layers in a Keras graph; `copies` keeps
    (keras layer, torch module) for the weights."""

    def __init__(self):
        self.copies, self.count = [], 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def conv(self, x, conv):
        if conv.padding[0]:
            x = keras.layers.ZeroPadding2D(conv.padding[0])(x)  # torch pads both sides
        layer = keras.layers.Conv2D(conv.out_channels, conv.kernel_size, strides=conv.stride,
                                    use_bias=False, name=self.name("conv"))
        self.copies.append((layer, conv))
        return layer(x)

    def bn(self, x, bn):
        layer = keras.layers.BatchNormalization(epsilon=bn.eps, name=self.name("bn"))
        self.copies.append((layer, bn))
        return layer(x)

    def run(self, x, module):
        """`module` (a torch Sequential of convs, norms, ReLUs and pools) on `x`."""
        for part in module:
            if isinstance(part, nn.Conv2d):
                x = self.conv(x, part)
            elif isinstance(part, nn.BatchNorm2d):
                x = self.bn(x, part)
            elif isinstance(part, nn.ReLU):
                x = keras.layers.ReLU()(x)
            elif isinstance(part, nn.AvgPool2d):
                x = keras.layers.AveragePooling2D(part.kernel_size, part.stride)(x)
            else:
                raise NotImplementedError(type(part).__name__)
        return x

    def block(self, x, block, name):
        convs = [m for m in (block.conv1, block.bn1, block.act1, block.conv2, block.bn2)]
        if hasattr(block, "conv3"):  # bottleneck
            convs += [block.act2, block.conv3, block.bn3]
        branch = self.run(x, convs)
        shortcut = self.run(x, block.downsample) if block.downsample is not None else x
        return keras.layers.ReLU(name=name)(keras.layers.Add()([branch, shortcut]))

    def model(self, net, name):
        images = keras.Input((SIZE, SIZE, 3))
        x = self.run(images, [*net.conv1, net.bn1, net.act1])
        # Max-pooling after a ReLU: zero padding is the -inf padding of torch's.
        x = keras.layers.MaxPooling2D(3, 2)(keras.layers.ZeroPadding2D(1)(x))
        for stage in range(1, 5):
            blocks = list(getattr(net, f"layer{stage}"))
            for i, block in enumerate(blocks):
                last = i == len(blocks) - 1
                x = self.block(x, block, f"layer{stage}" if last else self.name("block"))
        pooled = keras.layers.GlobalAveragePooling2D()(x)
        head = keras.layers.Dense(net.fc.out_features, name="fc")
        self.copies.append((head, net.fc))
        model = keras.Model(images, head(pooled), name=name)
        for layer, module in self.copies:
            layer.set_weights(_keras_weights(module))
        return model


def _keras_weights(module):
    if isinstance(module, nn.Conv2d):
        return [module.weight.detach().numpy().transpose(2, 3, 1, 0)]
    if isinstance(module, nn.BatchNorm2d):
        return [t.detach().numpy() for t in (module.weight, module.bias, module.running_mean,
                                              module.running_var)]
    return [module.weight.detach().numpy().T, module.bias.detach().numpy()]


def timm_resnet(seed):
    """timm's test_resnet with random weights and random batch-norm statistics (so inference
    and training normalisation differ, and a mix-up of the two shows)."""
    torch.manual_seed(seed)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=4)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return net


def torch_outputs(net, images, layers, training):
    """timm's own forward: logits and the named stages' (B, C, H, W) outputs, via hooks."""
    net.train(training)
    maps = {}
    hooks = [getattr(net, name).register_forward_hook(
        lambda module, args, out, _name=name: maps.__setitem__(_name, out)) for name in layers]
    try:
        logits = net(torch.tensor(images).permute(0, 3, 1, 2))
    finally:
        for hook in hooks:
            hook.remove()
    return logits, [maps[name] for name in layers]


@pytest.mark.parametrize("mode", ["soft"])  # soft has every term; the modes are tested apart
def test_the_objective_equals_pytorch_on_timm_resnets(rng, mode):
    teacher_net, student_net = timm_resnet(0), timm_resnet(1)
    teacher = _Rebuild().model(teacher_net, "teacher")
    student = _Rebuild().model(student_net, "student")
    images = rng.standard_normal((4, SIZE, SIZE, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode=mode, **SETTINGS)
    total = distiller.compute_loss(images, labels, distiller(images, training=True))

    with torch.no_grad():
        t_logits, t_maps = torch_outputs(teacher_net, images, [t for _, t in PAIRS], False)
        s_logits, s_maps = torch_outputs(student_net, images, [s for s, _ in PAIRS], True)
    expected = ref.objective(s_logits, t_logits, labels, s_maps, t_maps, mode=mode, **SETTINGS)
    # Same weights, two frameworks' convolutions: agreement to float32 rounding.
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(total)),
                               expected["total"].item(), rtol=2e-5)
    pair_losses = [float(keras.ops.convert_to_numpy(t.result())) for t in distiller.pair_trackers]
    _, expected_pairs = ref.spectral_alignment_loss(s_maps, t_maps)
    np.testing.assert_allclose(pair_losses, [p.item() for p in expected_pairs], rtol=2e-5)
    assert min(pair_losses) > 0
