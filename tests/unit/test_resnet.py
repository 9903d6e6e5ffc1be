"""ResNet18 / 34 for 32 x 32 grayscale: layer counts, parameter counts, readable layers, other input sizes."""

import pytest
import torch
import torch.nn as nn

from pipeline.classifier.resnet import ARCHITECTURES, LAYER_NAMES, ArchitectureError, build_classifier, parse_arch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def tiny_architecture(monkeypatch):
    """A width-4 ResNet18, known to build_classifier for these tests only."""
    monkeypatch.setitem(ARCHITECTURES, "resnet18-w4", "ResNet18 at width 4: for unit tests")


def expected_params(blocks, width, n_classes, in_channels=1):
    """Parameter count from the architecture's definition (convs without bias, BN weight + bias, linear)."""
    total = 9 * in_channels * width + 2 * width
    c_in = width
    for k, depth in enumerate(blocks):
        c = width * 2 ** k
        for d in range(depth):
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            if c_in != c or (k > 0 and d == 0):
                total += c_in * c + 2 * c
            c_in = c
    return total + c_in * n_classes + n_classes


def count(model, kernel):
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (kernel, kernel))


def test_resnet18_conv_layers_and_parameters():
    model = build_classifier("resnet18", 10)
    n_params = sum(p.numel() for p in model.parameters())
    # 11,173,962 is the well-known CIFAR ResNet18 count for RGB; one input channel saves 2 x 9 x 64 weights
    assert n_params == 11_173_962 - 2 * 9 * 64 == expected_params((2, 2, 2, 2), 64, 10)
    assert count(model, 3) == 17 and count(model, 1) == 3  # conv 1..17 on the main path, 3 projection shortcuts
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet34_and_narrow_parameter_counts():
    model = build_classifier("resnet34", 100)
    assert sum(p.numel() for p in model.parameters()) == expected_params((3, 4, 6, 3), 64, 100)
    assert count(model, 3) == 33
    narrow = build_classifier("resnet18-narrow", 10)
    assert narrow.width == 16
    assert sum(p.numel() for p in narrow.parameters()) == expected_params((2, 2, 2, 2), 16, 10)
    assert parse_arch("resnet34-w8") == ((3, 4, 6, 3), 8)


@pytest.mark.parametrize("size, spatial", [((32, 32), [(32, 32), (32, 32), (16, 16), (8, 8), (4, 4)]),
                                           ((36, 64), [(36, 64), (36, 64), (18, 32), (9, 16), (5, 8)])])
def test_layer_shapes_for_task_and_stimulus_sizes(size, spatial):
    model = build_classifier("resnet18-w4", 7).eval()
    x = torch.rand(3, 1, *size)
    logits, feats = model(x, return_layers=LAYER_NAMES)
    assert logits.shape == (3, 7) and list(feats) == list(LAYER_NAMES)
    channels = model.layer_channels()
    for name, hw in zip(LAYER_NAMES, spatial):
        assert feats[name].shape == (3, channels[name], *hw)
    assert channels == {"conv1": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def test_features_match_forward_and_stop_early():
    torch.manual_seed(0)
    model = build_classifier("resnet18-w4", 10).eval()
    x = torch.rand(2, 1, 32, 32)
    logits, full = model(x, return_layers=["layer2", "conv1"])
    assert set(full) == {"conv1", "layer2"}
    torch.testing.assert_close(model(x), logits)
    calls = []
    model.layer3.register_forward_hook(lambda *a: calls.append(1))
    part = model.features(x, ["conv1", "layer2"])
    assert not calls  # nothing past layer2 was computed
    for name in part:
        torch.testing.assert_close(part[name], full[name])
    # the stem output is conv -> BN -> ReLU of the input
    stem = torch.relu(model.bn1(model.conv1(x)))
    torch.testing.assert_close(part["conv1"], stem)


def test_bad_names_are_clear_errors():
    with pytest.raises(ArchitectureError, match="resnet18"):
        build_classifier("vgg19", 10)
    with pytest.raises(ArchitectureError, match="layer5"):
        build_classifier("resnet18-w4", 10).features(torch.rand(1, 1, 8, 8), ["layer5"])


def test_build_classifier_knows_exactly_the_listed_architectures(monkeypatch):
    monkeypatch.delitem(ARCHITECTURES, "resnet18-w4")
    assert set(ARCHITECTURES) == {"resnet18", "resnet34", "resnet18-narrow", "resnet10-w8"}
    for arch in ARCHITECTURES:
        assert build_classifier(arch, 10).blocks == parse_arch(arch)[0]
    assert parse_arch("resnet18-w4") == ((2, 2, 2, 2), 4)  # a name that parses is not yet one that is built
    with pytest.raises(ArchitectureError, match="resnet18-w4"):
        build_classifier("resnet18-w4", 10)
