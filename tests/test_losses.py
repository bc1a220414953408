import pytest
import torch
import torch.nn.functional as F

from ormbg.losses import ormbg_loss, soft_iou_loss, ssim


def reference_ssim(p, t):
    """SSIM as Wang et al. define it: one 11x11 Gaussian window (sigma 1.5), zero padding, five separate means."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    p, t = p.double(), t.double()

    def mean(x):
        return F.conv2d(x, window, padding=5)

    mu_p, mu_t = mean(p), mean(t)
    var_p, var_t, cov = mean(p * p) - mu_p**2, mean(t * t) - mu_t**2, mean(p * t) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))).mean()


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (3, 1, 37, 91), (1, 1, 8, 300)])
def test_separable_ssim_equals_the_two_dimensional_window(shape):
    generator = torch.Generator().manual_seed(0)
    prediction = torch.rand(shape, generator=generator)
    target = (torch.rand(shape, generator=generator) > 0.5).float()
    assert float(ssim(prediction, target)) == pytest.approx(float(reference_ssim(prediction, target)), abs=1e-6)
    assert float(ssim(target, target)) == pytest.approx(1.0, abs=1e-6)


def test_loss_is_smallest_at_the_target_and_has_gradients_for_every_side():
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    right = [(target * 2 - 1) * 8 for _ in range(6)]  # confident and correct logits
    wrong = [-side for side in right]
    assert float(ormbg_loss(right, target)["loss"]) < 0.01 < float(ormbg_loss(wrong, target)["loss"])
    assert float(soft_iou_loss(target, target)) == 0
    logits = [torch.zeros(2, 1, 32, 32, requires_grad=True) for _ in range(6)]
    ormbg_loss(logits, target)["loss"].backward()
    assert all(side.grad is not None and side.grad.abs().sum() > 0 for side in logits)
