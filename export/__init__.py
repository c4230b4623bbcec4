"""Stage 2 of train -> export -> bench: quantized TFLite and ONNX files, each checked against its Keras model.

``edgecifar export [MODEL] [--fp32 --fp16 --dynamic --int8 --onnx --onnx-int8 | --all]`` writes
``{name}_{precision}.tflite|.onnx`` (name = the run's recipe, else the model file's stem) and ``edgecifar.json``
into ``--out`` (default ``RUN_DIR/export/``). Modules, one job each:

- ``formats``: the one table of formats (flag, suffix, precision, runtime, writer); the CLI flags come from it.
- ``tflite``, ``onnx``: the writers. ``calibration``: which images calibrate and which validate.
- ``validate``: each file in LiteRT/onnxruntime (never TensorFlow) against Keras.
- ``manifest``: ``edgecifar.json``, merged by file name on re-export. ``source``: find and open the model (a run,
  ``.keras``, ``.h5`` with Keras 2's dropped keys cleaned, or a SavedModel folder: ``savedmodel``, its graph
  checked before it loads). ``adapt``: what it takes and gives, its pixel range, and the model wrapped so every
  file takes pixels 0..255 and gives probabilities. ``dataset``: ``--data`` at the model's size, the class names,
  and whether files are scored against labels or by agreement with Keras.
- ``tta``: the table of test-time augmentations ``--tta [flip|crops]`` builds into a file.
- ``pipeline``: the order of things. ``report``: the results table. ``command``: the click CLI.

Images: training held out ``stratified_split(y_train, V, seed=0)`` (V from the run's metrics.json, else
5,000). Validation is a stratified ``--val-size`` (2,000) subset of that held-out split; calibration is
a stratified ``--calibration`` (500) subset of the remaining training images. Never the test set.

Exit codes: 0 all files written and running (an accuracy drop above ``--threshold`` is a warning row);
1 a format failed (its file is not written, the others are); 2 bad input (one line, nothing written).
"""
