"""A conditional GAN of 28x28 chest X-rays (PneumoniaMNIST), trained across three hospitals.

Hospitals that cannot share patients' images can share a generator trained on all of them. Both
networks live in one ``nn.ModuleDict``, so they travel together as ``generator.*`` and
``discriminator.*`` in one update, and the YAML's strategy averages both. The hooks below replace
fedsilo's supervised loop:

- ``fit``: the adversarial training step (two optimizers), per silo and round;
- ``evaluate``: on a silo's own test images, how well the discriminator tells them from fakes;
- ``server_evaluate``: train-on-synthetic, test-on-real (TSTR): a classifier trained only on
  generated images, scored on the real official test split;
- ``samples``: a grid per class, saved in the run folder and shown in the report.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsilo import TrainSettings, classification_metrics, load_split

LATENT = 32
CLASSES = ("normal", "pneumonia")  # label 0, label 1
BETAS = (0.5, 0.999)  # Adam's momentum for GANs (Radford et al., 2016)
TSTR_PER_CLASS = 500  # synthetic images per class the TSTR classifier trains on
TSTR_EPOCHS = 5
SAMPLES_PER_CLASS = 10


class Generator(nn.Module):
    """(noise, label) -> image in [-1, 1]: a dense layer to 7x7 maps, two transposed convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(CLASSES), 16)
        self.fc = nn.Sequential(nn.Linear(LATENT + 16, 32 * 7 * 7), nn.LeakyReLU(0.2))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1),  # 14x14
            nn.BatchNorm2d(16),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(16, 1, 4, 2, 1),  # 28x28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1))
        return self.up(h.view(-1, 32, 7, 7))


class Discriminator(nn.Module):
    """(image, label) -> real/fake logit; the label enters as a learned 28x28 extra channel."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(CLASSES), 28 * 28)
        self.conv = nn.Sequential(
            nn.Conv2d(2, 16, 4, 2, 1),  # 14x14
            nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 4, 2, 1),  # 7x7
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(32 * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, self.embed(y).view(-1, 1, 28, 28)], dim=1)).squeeze(1)


def model() -> nn.Module:
    return nn.ModuleDict({"generator": Generator(), "discriminator": Discriminator()})


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One silo's split as images in [-1, 1] shaped (N, 1, 28, 28), and labels."""
    x, y = load_split(folder, split)
    return (x.astype(np.float32) / 127.5 - 1.0)[:, None], y.astype(np.int64)


def generate(g: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    return g(torch.randn(len(labels), LATENT, device=labels.device), labels)


def fit(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor], settings: TrainSettings) -> dict[str, float]:
    """``settings.epochs`` of non-saturating GAN training; fakes take the labels of the real batch."""
    g, d = model["generator"], model["discriminator"]
    opt_g = torch.optim.Adam(g.parameters(), lr=settings.lr, betas=BETAS)
    opt_d = torch.optim.Adam(d.parameters(), lr=settings.lr, betas=BETAS)
    x, y = data
    d_total = g_total = 0.0
    steps = 0
    for epoch in range(settings.epochs):
        for opt in (opt_g, opt_d):
            opt.param_groups[0]["lr"] = settings.lr_at(epoch)
        for idx in torch.randperm(len(x), device=x.device).split(settings.batch_size):
            real, labels = x[idx], y[idx]
            fake = generate(g, labels)
            ones, zeros = torch.ones(len(idx), device=x.device), torch.zeros(len(idx), device=x.device)
            d_loss = F.binary_cross_entropy_with_logits(d(real, labels), ones * 0.9)  # one-sided label smoothing
            d_loss = d_loss + F.binary_cross_entropy_with_logits(d(fake.detach(), labels), zeros)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(d(fake, labels), ones)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_total, g_total, steps = d_total + d_loss.item(), g_total + g_loss.item(), steps + 1
    return {"train_loss": g_total / max(steps, 1), "d_loss": d_total / max(steps, 1)}


def evaluate(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """The discriminator on a silo's held-out real images and as many fakes: 0.5 accuracy = fooled."""
    g, d = model["generator"], model["discriminator"]
    x, y = data
    real, fake = d(x, y), d(generate(g, y), y)
    loss = F.binary_cross_entropy_with_logits(
        torch.cat([real, fake]), torch.cat([torch.ones_like(real), torch.zeros_like(fake)])
    )
    return float(loss), {
        "d_real_accuracy": float((real > 0).float().mean()),
        "d_fake_accuracy": float((fake < 0).float().mean()),
    }


def classifier() -> nn.Module:
    """The TSTR classifier: the small CNN of examples/pneumonia."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 2),
    )  # fmt: skip


def server_evaluate(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor], round: int) -> dict[str, float]:
    """Train-on-synthetic, test-on-real: a classifier trained only on generated, class-balanced
    images, scored on the real test split. High only if the generator draws each class faithfully."""
    x_test, y_test = data
    with torch.no_grad():
        labels = torch.arange(len(CLASSES), device=x_test.device).repeat_interleave(TSTR_PER_CLASS)
        synthetic = generate(model["generator"], labels)
    clf = classifier().to(x_test.device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    for _ in range(TSTR_EPOCHS):
        for idx in torch.randperm(len(labels), device=labels.device).split(64):
            loss = F.cross_entropy(clf(synthetic[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        logits = clf(x_test)
        test_loss = float(F.cross_entropy(logits, y_test))
    probs = torch.softmax(logits.double(), dim=1)[:, 1].cpu().numpy()
    scores = classification_metrics(y_test.cpu().numpy(), logits.argmax(1).cpu().numpy(), probs)
    return {"loss": test_loss, **{f"tstr_{k}": v for k, v in scores.items()}}


def samples(model: nn.ModuleDict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``SAMPLES_PER_CLASS`` images per class, in [0, 1], from the (seeded, fixed) noise ``rng`` gives."""
    g = model["generator"]
    device = next(g.parameters()).device
    z = torch.from_numpy(rng.standard_normal((SAMPLES_PER_CLASS, LATENT)).astype(np.float32)).to(device)
    return {
        name: (g(z, torch.full((SAMPLES_PER_CLASS,), c, dtype=torch.long, device=device)) + 1) / 2
        for c, name in enumerate(CLASSES)
    }
