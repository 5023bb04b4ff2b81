"""Input channels (docs/data.md): three layouts, told apart per channel directory.

::

    demo format   <channel>/manifest.csv   header "file,label"; file relative to the channel, label a class name
                  <channel>/<file>.png     8-bit grayscale (L) or RGB images, all the same size
    ImageFolder   <channel>/<class>/**/*.png|jpg|jpeg   one sub-folder per class
    .npz arrays   <channel>/*.npz          arrays x (N,H,W or N,C,H,W; pixel values 0..255) and y (class indices)

    any format    <channel>/classes.txt    optional: class names, one a line, in index order

A channel with a manifest.csv is in the demo format; otherwise one with ``*.npz`` files is in the .npz
format, and one with class sub-folders an ImageFolder. Images are kept as float32 pixel values in [0, 255],
channels first; normalisation lives inside the model, so the exported artifact takes the same raw pixels
a client sends. ``.npz`` files are read with ``allow_pickle=False``: an object array is refused, never
unpickled.

A sample that cannot be read (a missing or undecodable image, an unreadable .npz file, pixel values
outside 0..255) fails the channel with an error naming it; with ``skip_bad_samples`` it is skipped instead
and listed in :attr:`Split.skipped`. Mistakes in the layout itself (labels, shapes, missing arrays) always
fail: skipping would silently train on something else than the user meant.

:mod:`trainer.data.channels` tells the formats apart and loads the job's channels (``load_channels``); one
module a format reads it (:mod:`~trainer.data.manifest`, :mod:`~trainer.data.imagefolder`,
:mod:`~trainer.data.npz`); :mod:`trainer.data.samples` holds :class:`~trainer.data.samples.Split` and what the
readers share.
"""
