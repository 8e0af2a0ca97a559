"""napari plugin (npe2; ``pip install "casparks[napari]"``): look at detections, correct them,
save the corrections as training samples.

* reader (``_reader``): movies with their units and labels, ``casparks detect`` results;
* "Detect events" widget (``_widget.DetectWidget``): the bundled or a trained model on the open
  movie, in a worker thread with progress;
* "Save training sample" widget (``_widget.SaveSampleWidget``): the movie and its corrected
  class/event layers as ``NN_video.tif``, ``NN_class_label.tif``, ``NN_event_label.tif``
  (:func:`casparks.dataset.write_sample`), for ``casparks train``;
* sample data (``_sample_data``): the README's simulated example movie.

The manifest is ``napari.yaml`` beside this file. Layer building (``_layers``) is pure, so the
viewer shows the same classes, colours and units as the rest of the tool.
"""
