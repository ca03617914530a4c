import math

import pytest
import torch

from utils.training.losses import ArcFaceLoss, CoSENTLoss, SoftmaxLoss, TripletLoss, make_loss


def arcface(margin=0.5, scale=10.0, easy=False):
    loss = ArcFaceLoss(num_classes=2, embedding_size=2, margin=margin, scale=scale, easy_margin=easy)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return loss


def test_arcface_logits_hand_computed():
    # embedding at angle theta = acos(0.8) from class 1 and acos(0.6) from class 0
    e, y = torch.tensor([[0.6, 0.8]]), torch.tensor([1])
    logits = arcface().logits(e, y)
    target = 0.8 * math.cos(0.5) - 0.6 * math.sin(0.5)  # cos(theta + m)
    assert logits[0, 1].item() == pytest.approx(10 * target, abs=1e-5)
    assert logits[0, 0].item() == pytest.approx(10 * 0.6, abs=1e-5)  # other classes: plain s*cos
    expected = -math.log(math.exp(10 * target) / (math.exp(10 * target) + math.exp(6.0)))
    assert arcface()(e, y).item() == pytest.approx(expected, abs=1e-5)


def test_arcface_margin_fallbacks():
    # the true class lies at more than 90 degrees: the standard rule uses cos(theta) - m*sin(m) past pi - m,
    # the easy margin keeps cos(theta) when it is negative
    e, y = torch.tensor([[1.0, -0.2]]), torch.tensor([1])
    cos = -0.2 / math.hypot(1.0, 0.2)
    assert arcface(easy=True).logits(e, y)[0, 1].item() == pytest.approx(10 * cos, abs=1e-5)
    sin = math.sqrt(1 - cos**2)
    assert arcface(easy=False).logits(e, y)[0, 1].item() == pytest.approx(
        10 * (cos * math.cos(0.5) - sin * math.sin(0.5)), abs=1e-5)  # theta < pi - m: still cos(theta + m)
    far = torch.tensor([[-1.0, -0.05]]), torch.tensor([0])  # theta close to pi
    cos_far = -1.0 / math.hypot(1.0, 0.05)
    assert arcface().logits(*far)[0, 0].item() == pytest.approx(10 * (cos_far - math.sin(math.pi - 0.5) * 0.5),
                                                                abs=1e-5)


def test_cosent_matches_formula():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(6, 4))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    cos = e @ e.T
    pos = [cos[i, j] for i in range(6) for j in range(i + 1, 6) if y[i] == y[j]]
    neg = [cos[i, j] for i in range(6) for j in range(i + 1, 6) if y[i] != y[j]]
    expected = torch.log(1 + sum(torch.exp(20 * (n - p)) for p in pos for n in neg))
    assert CoSENTLoss(scale=20)(e, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert CoSENTLoss()(e, torch.arange(6)).item() == 0.0  # no positive pair


def test_triplet_zero_when_separated_and_positive_otherwise():
    e = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    y = torch.tensor([0, 0, 1, 1])
    assert TripletLoss(margin=0.2)(e, y).item() == pytest.approx(0.0, abs=1e-6)
    assert TripletLoss(margin=0.2)(e, torch.tensor([0, 1, 0, 1])).item() > 0


@pytest.mark.parametrize("name", ["arcface", "softmax", "triplet", "cosent"])
def test_losses_train(name):
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    y = torch.arange(32) % 4
    model = torch.nn.Linear(8, 8)
    loss_fn = make_loss(name, num_classes=4, embedding_size=8)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=0.1)
    first = loss_fn(model(x), y).item()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert math.isfinite(first) and loss.item() < first


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("center", 2, 2)
    assert isinstance(make_loss("softmax", 3, 4), SoftmaxLoss)
