"""Face detection and cropping: detectors behind one interface, the crop stage, faces-eval.

    detectors.py  make_detector(name, ...) -> Detector; Detector.detect(images) -> boxes
    images.py     load_rgb() and the square window around a face (crop_square(), cut_window()),
                  shared by the anime pages, CelebA's `crop: mtcnn` and faces-eval
    crop.py       the crop_anime_faces stage: page order, near duplicates, the dataset
    pages.py      decoding, detection and cutting of the crawled pages in a process pool,
                  remembered per image and detector setting (detection_cache.py) so a refresh
                  detects only new pages
    hygiene.py    monochrome pages, perceptual-hash near-duplicates, hair-colour labels
    detector_eval.py  faces_eval(): recall, extra detections and images/s on a labelled folder
                  (`python -m pipeline faces-eval`; not to be confused with pipeline/evaluate/,
                  which evaluates GANs)
"""
