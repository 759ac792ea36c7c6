#!/usr/bin/env python3
"""Writes Tests/TrainingTests/Fixtures/reference.tfevents with the real TensorBoard's
own record writer and protobuf classes: what `TensorBoardWriter` must write byte for byte
for the same events, and what the tests' reader must read.

    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install tensorboard
    /tmp/tbvenv/bin/python tools/make_tensorboard_fixture.py

The events of a resumed run's new file (fixed wall times, so the bytes do not depend on
the clock):
  1. file_version "brain.Event:2" at wall time 1700000000.5
  2. SessionLog START at step 1250, same wall time
  3. scalars train_loss 0.75, lr 1.5e-4 at step 1250, wall time 1700000001.25
  4. scalars train_loss 0.5, lr 3e-05 at step 2500, wall time 1700000003.0
"""
import io
import os

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

def scalars(values, step, wall_time):
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)

events = [
    event_pb2.Event(wall_time=1700000000.5, file_version="brain.Event:2"),
    event_pb2.Event(wall_time=1700000000.5, step=1250,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)),
    scalars([("train_loss", 0.75), ("lr", 1.5e-4)], 1250, 1700000001.25),
    scalars([("train_loss", 0.5), ("lr", 3e-5)], 2500, 1700000003.0),
]
buffer = io.BytesIO()
writer = RecordWriter(buffer)
for event in events:
    writer.write(event.SerializeToString())
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "TrainingTests", "Fixtures", "reference.tfevents")
with open(path, "wb") as output:
    output.write(buffer.getvalue())
print("wrote", os.path.normpath(path), len(buffer.getvalue()), "bytes")
