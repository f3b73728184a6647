"""The parts of the throughput benchmark (bench/throughput.py is its entry point):

    machine.py    the machine: other processes' load, clocks
    peak.py       matmul FLOPs of a BERT pass and the measured matmul peak (for MFU)
    workloads.py  the batches: fixed length 128 and the real MRPC dev length mix
    runners.py    ours and transformers' BERT classifier, each stepped as its users step it
    measure.py    one config's measurements: interleaved repeats, medians
    scripts.py    the scripts' own path: finetune.py on MRPC in a fresh process
    report.py     targets (PASS / FAIL / not decided, from paired repeats) and the table

Importing the package puts the project's src/ on sys.path (the scripts' import root).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
