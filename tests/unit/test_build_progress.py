"""What a box build shows while debootstrap works: packages fetched, then unpacked and
configured of that many, a phase event per ten packages at most."""

from __future__ import annotations

from boxes.build import DebootstrapProgress


class Report:
    def __init__(self):
        self.lines, self.details = [], []

    def detail(self, line):
        self.lines.append(line)

    def phase(self, phase, detail):
        self.details.append(detail)


def test_debootstrap_progress():
    report = Report()
    progress = DebootstrapProgress(report, "debootstrap bookworm")
    output = (["I: Retrieving InRelease ", "I: Checking Release signature", "I: Retrieving Packages ",
               "I: Validating Packages "] + [f"I: Retrieving pkg{i} 1.{i}" for i in range(23)]
              + [f"I: Validating pkg{i} 1.{i}" for i in range(2)] + [f"I: Unpacking pkg{i}..." for i in range(11)]
              + [f"I: Configuring pkg{i}..." for i in range(25)] + ["I: Base system installed successfully."])
    for line in output:
        progress(line)
    assert report.lines == output  # every line still reaches the output
    assert report.details == [
        "debootstrap bookworm: packages fetched: 1", "debootstrap bookworm: packages fetched: 10",
        "debootstrap bookworm: packages fetched: 20", "debootstrap bookworm: unpacking 1 of 25",
        "debootstrap bookworm: unpacking 10 of 25", "debootstrap bookworm: configuring 1 of 25",
        "debootstrap bookworm: configuring 10 of 25", "debootstrap bookworm: configuring 20 of 25",
        "debootstrap bookworm: configuring 25 of 25",
    ]
