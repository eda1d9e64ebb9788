"""Face detection and cropping: detectors behind one interface, the crop stage, faces-eval.

    detectors.py  make_detector(name, ...) -> Detector; Detector.detect(images) -> boxes
    crop.py       crop_square() and the crop_anime_faces stage
    hygiene.py    monochrome pages, perceptual-hash near-duplicates, hair-colour labels
    evaluate.py   faces_eval(): recall, extra detections and images/s on a labelled folder
"""
