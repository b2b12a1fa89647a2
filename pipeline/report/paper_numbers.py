"""The numbers the HDM paper reports, transcribed as data (Tables 1–5).

Source: "Heatmap Distribution Matching for Human Pose Estimation" (NeurIPS 2022),
Tables 1–5. Every row of every table is here, in the paper's order, with the values the
paper prints; ``None`` stands for a cell the paper prints as "-". Method names are written
without their citation number, which is kept in :attr:`PaperRow.citation`. Input sizes are
written ``"384×288"`` (the paper's "384 × 288" without the spaces).

Rows that are this benchmark's systems carry the name of the run that reproduces them
(:attr:`PaperRow.run`); every other row (Hourglass, CPN, DarkPose, UDP, TokenPose, ...) is a
reference row with ``run=None``. Rows that the paper compares against a baseline (the
"+ Ours" rows of Tables 1–3, the variants in Tables 4 and 5) name that baseline's run in
:attr:`PaperRow.baseline_run`; the baseline row is the row of the same table with that run.

Transcription notes
-------------------
* The "+ Ours" rows of Tables 1–3 print the gain over their baseline after the main metric,
  e.g. "76.7(↑1.7)"; it is kept verbatim in :attr:`PaperRow.paper_delta`. (In the text
  extraction of Table 3 the arrow reads "†"; it is the same "↑".) Each printed gain equals the
  difference of the printed numbers, which the tests check.
* Tables 4 and 5 print only Method and the six metrics. Their backbone and input size are
  not printed: the ablations are run "on the COCO validation set via applying our proposed
  method on HRNet-W48" (Sec. 5.3), and their baseline / 1000-iteration / sub-pixel rows equal
  Table 1's HRNet-W48 384×288 rows, so ``backbone="HRNet-W48"`` and ``input_size="384×288"``
  are filled in from there (see :attr:`PaperTable.notes`). Their venue cells are empty.
* An empty cell (the venue of "+ Ours") is ``""``; a "-" cell is ``None``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COCO_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR")
MPII_METRICS: tuple[str, ...] = ("Mean", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table."""

    method: str
    venue: str  # "" where the paper leaves the cell empty
    backbone: str | None  # None where the paper prints "-"
    input_size: str | None  # "384×288"; None where the paper prints "-"
    values: tuple[float | None, ...]  # aligned with PaperTable.metrics; None = "-"
    citation: str = ""  # "[26]"
    run: str | None = None  # this benchmark's run name; None = reference row
    baseline_run: str | None = None  # Δ is taken against the row with this run
    paper_delta: float | None = None  # the Δ the paper prints after the main metric
    in_paper: bool = True  # False: a line this benchmark adds (pipeline/report/beyond.py), measured only

    @property
    def is_benchmark(self) -> bool:
        """True for rows this benchmark reproduces (they have a run name)."""
        return self.run is not None


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's Tables 1–5."""

    number: int
    caption: str  # the paper's caption, verbatim
    short_title: str  # used in this benchmark's table titles
    split: str  # prefix of the measured metric keys: "coco_val", "coco_testdev", "mpii_val"
    metrics: tuple[str, ...]  # canonical metric names (measured keys are f"{split}/{metric}")
    paper_headers: tuple[str, ...]  # the column labels as the paper prints them
    main_metric: str  # the metric the Δ is printed after
    measured_scale: float  # multiply a measured value by this to get the paper's units
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"table{self.number}"

    def value(self, row: PaperRow, metric: str) -> float | None:
        """The paper's value of ``metric`` in ``row`` (None for "-")."""
        return row.values[self.metrics.index(metric)]

    def row_for_run(self, run: str) -> PaperRow:
        """The (first) row of this table reproduced by ``run``."""
        for row in self.rows:
            if row.run == run:
                return row
        raise KeyError(f"table {self.number} has no row for run {run!r}")

    def runs(self) -> tuple[str, ...]:
        """The run names of this table's benchmark rows, in row order, without repeats."""
        return tuple(dict.fromkeys(r.run for r in self.rows if r.run is not None))


def _r(method, citation, venue, backbone, input_size, values, run=None, baseline_run=None, paper_delta=None):
    return PaperRow(
        method=method, venue=venue, backbone=backbone, input_size=input_size, values=tuple(values),
        citation=citation, run=run, baseline_run=baseline_run, paper_delta=paper_delta,
    )


_ = None  # a "-" cell

# ---------------------------------------------------------------- Table 1: COCO val2017
TABLE1 = PaperTable(
    number=1,
    caption="The improvement of AP on COCO validation set when our proposed method is applied to various baselines.",
    short_title="COCO val2017",
    split="coco_val",
    metrics=COCO_METRICS,
    paper_headers=("AP", "AP50", "AP75", "APM", "APL", "AR"),
    main_metric="AP",
    measured_scale=100.0,
    rows=(
        _r("Hourglass", "[20]", "ECCV 2016", "8-Stage Hourglass", "256×192", (66.9, _, _, _, _, _)),
        _r("CPN", "[3]", "CVPR 2018", "ResNet-50", "256×192", (69.4, _, _, _, _, _)),
        _r("CPN", "[3]", "CVPR 2018", "ResNet-50", "384×288", (71.6, _, _, _, _, _)),
        _r("DarkPose", "[39]", "CVPR 2020", "HRNet-W32", "384×288", (76.6, 90.7, 82.8, 72.7, 83.9, 81.5)),
        _r("UDP", "[10]", "CVPR 2020", "HRNet-W32", "384×288", (77.8, 91.7, 84.5, 74.2, 84.3, 82.4)),
        _r("UDP", "[10]", "CVPR 2020", "HRNet-W48", "384×288", (77.8, 92.0, 84.3, 74.2, 84.5, 82.5)),
        _r("TokenPose", "[15]", "ICCV 2021", "TokenPose-L/D24", "256×192", (75.8, 90.3, 82.5, 72.3, 82.7, 80.9)),
        _r("Removing Bias", "[7]", "ICCV 2021", "ResNet-152", "384×288", (74.4, _, _, _, _, _)),
        _r("Removing Bias", "[7]", "ICCV 2021", "HRNet-W32", "256×192", (75.8, _, _, _, _, _)),
        _r("Simple Baseline", "[33]", "ECCV 2018", "ResNet-152", "384×288", (75.0, 90.8, 82.1, 67.8, 78.3, 80.0),
           run="coco_simplebaseline_mse"),
        _r("+ Ours", "", "", "ResNet-152", "384×288", (76.7, 92.1, 83.6, 69.7, 80.0, 81.3),
           run="coco_simplebaseline_hdm", baseline_run="coco_simplebaseline_mse", paper_delta=1.7),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W32", "384×288", (76.7, 91.9, 83.6, 73.2, 83.2, 81.6),
           run="coco_hrnet_w32_mse"),
        _r("+ Ours", "", "", "HRNet-W32", "384×288", (78.2, 92.2, 84.5, 74.3, 84.7, 82.5),
           run="coco_hrnet_w32_hdm", baseline_run="coco_hrnet_w32_mse", paper_delta=1.5),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W48", "384×288", (77.1, 91.8, 83.8, 73.5, 83.5, 81.8),
           run="coco_hrnet_w48_mse"),
        _r("+ Ours", "", "", "HRNet-W48", "384×288", (78.8, 92.5, 85.1, 75.0, 85.3, 83.1),
           run="coco_hrnet_w48_hdm", baseline_run="coco_hrnet_w48_mse", paper_delta=1.7),
        _r("HRFormer", "[37]", "NIPS 2021", "HRFormer-Base", "384×288", (78.0, 92.2, 84.8, 74.3, 84.6, 82.6),
           run="coco_hrformer_base_mse"),
        _r("+ Ours", "", "", "HRFormer-Base", "384×288", (78.9, 92.6, 85.4, 75.3, 85.3, 83.3),
           run="coco_hrformer_base_hdm", baseline_run="coco_hrformer_base_mse", paper_delta=0.9),
    ),
)

# ----------------------------------------------------------- Table 2: COCO test-dev2017
TABLE2 = PaperTable(
    number=2,
    caption="The improvement of AP on COCO test-dev set when our proposed method is applied to various baselines.",
    short_title="COCO test-dev2017",
    split="coco_testdev",
    metrics=COCO_METRICS,
    paper_headers=("AP", "AP50", "AP75", "APM", "APL", "AR"),
    main_metric="AP",
    measured_scale=100.0,
    rows=(
        _r("G-RMI", "[22]", "CVPR 2017", "ResNet-101", "353×257", (64.9, 85.5, 71.3, 62.3, 70.0, 69.7)),
        _r("Mask-RCNN", "[9]", "ICCV 2017", "ResNet-50-FPN", None, (63.1, 87.3, 68.7, 57.8, 71.4, _)),
        _r("RMPE", "[6]", "ICCV 2017", "PyraNet[36]", "320×256", (72.3, 89.2, 79.1, 68.0, 78.6, _)),
        _r("CFN", "[11]", "ICCV 2017", None, None, (72.6, 86.1, 69.7, 78.3, 64.1, _)),
        _r("CPN", "[3]", "CVPR 2018", "ResNet-Inception", "384×288", (72.1, 91.4, 80.0, 68.7, 77.2, 78.5)),
        _r("CPN(ensemble)", "[3]", "CVPR 2018", "ResNet-Inception", "384×288", (73.0, 91.7, 80.9, 69.5, 78.1, 79.0)),
        _r("Integral Pose Regression", "[27]", "ECCV 2018", "ResNet-101", "256×256", (67.8, 88.2, 74.8, 63.9, 74.0, _)),
        _r("Posefix", "[18]", "CVPR 2019", "ResNet-152", "384×288", (73.6, 90.8, 81.0, 70.3, 79.8, 79.0)),
        _r("DarkPose", "[39]", "CVPR 2020", "HRNet-W48", "384×288", (76.2, 92.5, 83.6, 72.5, 82.4, 81.1)),
        _r("UDP", "[10]", "CVPR 2020", "HRNet-W48", "384×288", (76.5, 92.7, 84.0, 73.0, 82.4, 81.6)),
        _r("TokenPose", "[15]", "ICCV 2021", "TokenPose-L/D24", "384×288", (75.9, 92.3, 83.4, 72.2, 82.1, 80.8)),
        _r("Removing Bias", "[7]", "ICCV 2021", "HRNet-W48", "384×288", (76.1, _, _, _, _, 81.0)),
        _r("Simple Baseline", "[33]", "ECCV 2018", "ResNet-152", "384×288", (73.8, 91.7, 81.2, 70.3, 80.0, 79.1),
           run="coco_simplebaseline_mse"),
        _r("+ Ours", "", "", "ResNet-152", "384×288", (75.3, 92.6, 83.1, 71.7, 81.1, 80.3),
           run="coco_simplebaseline_hdm", baseline_run="coco_simplebaseline_mse", paper_delta=1.5),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W32", "384×288", (74.9, 92.5, 82.8, 71.3, 80.9, 80.1),
           run="coco_hrnet_w32_mse"),
        _r("+ Ours", "", "", "HRNet-W32", "384×288", (76.7, 92.6, 84.0, 73.0, 82.8, 81.5),
           run="coco_hrnet_w32_hdm", baseline_run="coco_hrnet_w32_mse", paper_delta=1.8),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W48", "384×288", (75.5, 92.5, 83.3, 71.9, 81.5, 80.5),
           run="coco_hrnet_w48_mse"),
        _r("+ Ours", "", "", "HRNet-W48", "384×288", (77.2, 93.0, 84.4, 73.4, 83.3, 82.0),
           run="coco_hrnet_w48_hdm", baseline_run="coco_hrnet_w48_mse", paper_delta=1.7),
        _r("HRFormer", "[37]", "NIPS 2021", "HRFormer-Base", "384×288", (76.2, 92.7, 83.8, 72.5, 82.3, 81.2),
           run="coco_hrformer_base_mse"),
        _r("+ Ours", "", "", "HRFormer-Base", "384×288", (77.2, 93.1, 84.7, 73.8, 83.0, 82.1),
           run="coco_hrformer_base_hdm", baseline_run="coco_hrformer_base_mse", paper_delta=1.0),
    ),
)

# ------------------------------------------------------------------ Table 3: MPII val
TABLE3 = PaperTable(
    number=3,
    caption="The improvement of AP on MPII validation set when our proposed method is applied to various baselines.",
    short_title="MPII val (PCKh@0.5)",
    split="mpii_val",
    metrics=MPII_METRICS,
    paper_headers=("Mean", "Hea", "Sho", "Elb", "Wri", "Hip", "Kne", "Ank"),
    main_metric="Mean",
    measured_scale=1.0,  # PCKh is measured in percent already
    rows=(
        _r("Integral Pose Regression", "[27]", "ECCV 2018", "ResNet-101", "256×256", (87.9, _, _, _, _, _, _, _)),
        _r("UDP", "[10]", "CVPR 2020", "HRNet-W32", "256×256", (90.4, 97.4, 96.0, 91.0, 86.5, 89.1, 86.6, 83.3)),
        _r("DarkPose", "[39]", "CVPR 2020", "HRNet-W32", "256×256", (90.6, 97.2, 95.9, 91.2, 86.7, 89.7, 86.7, 84.0)),
        _r("TokenPose", "[15]", "ICCV 2021", "TokenPose-L/D6", "256×256", (90.1, 97.1, 95.9, 91.0, 85.8, 89.5, 86.1, 82.7)),
        _r("TokenPose", "[15]", "ICCV 2021", "TokenPose-L/D12", "256×256", (90.1, 97.2, 95.8, 90.7, 85.9, 89.2, 86.2, 82.3)),
        _r("TokenPose", "[15]", "ICCV 2021", "TokenPose-L/D24", "256×256", (90.2, 97.1, 95.9, 90.4, 86.0, 89.3, 87.1, 82.5)),
        _r("Removing Bias", "[7]", "ICCV 2021", "ResNet-152", "256×256", (89.9, _, _, _, _, _, _, _)),
        _r("Removing Bias", "[7]", "ICCV 2021", "HRNet-W32", "256×256", (90.6, _, _, _, _, _, _, _)),
        _r("Simple Baseline", "[33]", "ECCV 2018", "ResNet-152", "256×256", (89.6, 97.0, 95.9, 90.0, 85.0, 89.2, 85.3, 81.3),
           run="mpii_simplebaseline_mse"),
        _r("+ Ours", "", "", "ResNet-152", "256×256", (90.3, 97.0, 96.1, 90.6, 86.1, 89.2, 86.7, 83.1),
           run="mpii_simplebaseline_hdm", baseline_run="mpii_simplebaseline_mse", paper_delta=0.7),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W32", "256×256", (90.4, 97.1, 95.9, 90.7, 86.1, 89.4, 86.9, 83.2),
           run="mpii_hrnet_w32_mse"),
        _r("+ Ours", "", "", "HRNet-W32", "256×256", (90.9, 97.3, 96.2, 91.2, 86.8, 90.1, 87.4, 84.1),
           run="mpii_hrnet_w32_hdm", baseline_run="mpii_hrnet_w32_mse", paper_delta=0.5),
        _r("HRNet", "[26]", "CVPR 2019", "HRNet-W48", "256×256", (90.5, 96.9, 96.0, 90.9, 86.2, 89.6, 87.1, 83.5),
           run="mpii_hrnet_w48_mse"),
        _r("+ Ours", "", "", "HRNet-W48", "256×256", (90.9, 97.1, 96.3, 91.2, 87.0, 90.2, 87.5, 84.2),
           run="mpii_hrnet_w48_hdm", baseline_run="mpii_hrnet_w48_mse", paper_delta=0.4),
    ),
)

_ABLATION_NOTE = (
    "The paper prints no backbone or input size for this ablation; HRNet-W48 at 384×288 is taken from "
    "Sec. 5.3 and Table 1, whose HRNet-W48 rows carry the same numbers."
)

# ------------------------------------------- Table 4: naive vs sub-pixel demanders (COCO val)
TABLE4 = PaperTable(
    number=4,
    caption=("Evaluation on the effectiveness of formulating the demanders D involving the idea of "
             "sub-pixel resolution."),
    short_title="naive vs sub-pixel demanders (COCO val2017, HRNet-W48)",
    split="coco_val",
    metrics=COCO_METRICS,
    paper_headers=("AP", "AP50", "AP75", "APM", "APL", "AR"),
    main_metric="AP",
    measured_scale=100.0,
    rows=(
        _r("Baseline(HRNet-W48)", "", "", "HRNet-W48", "384×288", (77.1, 91.8, 83.8, 73.5, 83.5, 81.8),
           run="coco_hrnet_w48_mse"),
        _r("Naive demanders formulation", "", "", "HRNet-W48", "384×288", (77.9, 92.5, 84.8, 74.5, 83.9, 82.4),
           run="coco_hrnet_w48_hdm_naive", baseline_run="coco_hrnet_w48_mse"),
        _r("Sub-pixel demanders formulation", "", "", "HRNet-W48", "384×288", (78.8, 92.5, 85.1, 75.0, 85.3, 83.1),
           run="coco_hrnet_w48_hdm", baseline_run="coco_hrnet_w48_mse"),
    ),
    notes=(_ABLATION_NOTE,),
)

# ------------------------------------------------ Table 5: Sinkhorn iterations (COCO val)
TABLE5 = PaperTable(
    number=5,
    caption="Evaluation on the number of Sinkhorn iterations.",
    short_title="number of Sinkhorn iterations (COCO val2017, HRNet-W48)",
    split="coco_val",
    metrics=COCO_METRICS,
    paper_headers=("AP", "AP50", "AP75", "APM", "APL", "AR"),
    main_metric="AP",
    measured_scale=100.0,
    rows=(
        _r("Baseline(HRNet-W48)", "", "", "HRNet-W48", "384×288", (77.1, 91.8, 83.8, 73.5, 83.5, 81.8),
           run="coco_hrnet_w48_mse"),
        _r("500 Sinkhorn iterations", "", "", "HRNet-W48", "384×288", (78.3, 92.4, 84.9, 74.8, 84.4, 82.7),
           run="coco_hrnet_w48_hdm_it500", baseline_run="coco_hrnet_w48_mse"),
        _r("1000 Sinkhorn iterations", "", "", "HRNet-W48", "384×288", (78.8, 92.5, 85.1, 75.0, 85.3, 83.1),
           run="coco_hrnet_w48_hdm", baseline_run="coco_hrnet_w48_mse"),
        _r("1500 Sinkhorn iterations", "", "", "HRNet-W48", "384×288", (78.7, 92.4, 85.2, 74.8, 85.4, 83.0),
           run="coco_hrnet_w48_hdm_it1500", baseline_run="coco_hrnet_w48_mse"),
    ),
    notes=(_ABLATION_NOTE,),
)

del _

TABLES: tuple[PaperTable, ...] = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5)
TABLES_BY_KEY: dict[str, PaperTable] = {t.key: t for t in TABLES}

#: Every run name this benchmark's tables refer to, in first-appearance order.
BENCHMARK_RUNS: tuple[str, ...] = tuple(dict.fromkeys(run for t in TABLES for run in t.runs()))


def get_table(number_or_key: int | str) -> PaperTable:
    """Table by number (1–5) or key ("table1")."""
    key = f"table{number_or_key}" if isinstance(number_or_key, int) else str(number_or_key)
    try:
        return TABLES_BY_KEY[key]
    except KeyError:
        raise KeyError(f"no paper table {number_or_key!r}; have {sorted(TABLES_BY_KEY)}") from None


def _check() -> None:
    """Structural self-check at import: value counts and baseline links are consistent."""
    for t in TABLES:
        runs_here = {r.run for r in t.rows if r.run}
        for r in t.rows:
            assert len(r.values) == len(t.metrics), (t.number, r.method)
            assert r.baseline_run is None or r.baseline_run in runs_here, (t.number, r.method)
            assert r.paper_delta is None or r.baseline_run is not None, (t.number, r.method)
            assert r.run is None or r.run.startswith(t.split.split("_")[0] + "_"), (t.number, r.run)


_check()
