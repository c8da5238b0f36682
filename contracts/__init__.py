"""The contracts every stage shares, TF-free, shipped to the Raspberry Pi whole.

    formats.py     the table of export formats: names, files, runtimes, converters, parity thresholds, bundle order
    manifest.py    the manifest export writes beside the artifacts and edge, benchmarks and deploy read
    preprocess.py  frame -> model input (RGB, 0-255, area resize): the one implementation train and edge both run
    atomic.py      atomic writes, so an interrupted step never leaves a file that looks whole
    console.py     progress lines and one-line errors
    errors.py      the errors a user must fix (EdgeError, BackendError)
    runners/       the model runners (LiteRT, onnxruntime) and the Classifier: export's parity gate, edge and the
                   benchmarks run every artifact through exactly this code

Data flows one way: images -> train -> export -> artifacts + manifest -> edge / benchmarks -> sweep, and deploy packs
a bundle. Every stage imports from here; this package imports none of them, and needs only numpy, OpenCV and a
LiteRT interpreter (onnxruntime only for .onnx models).
"""
