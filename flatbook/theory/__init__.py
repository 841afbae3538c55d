"""The exact mathematics behind the book, independent of training: SymPy derivations of the deep
linear model's Hessian and the theorem's limit (``symbolic``), closed forms of the cross-entropy
Hessian (``crossentropy``), exact rational reference spectra (``exact``) and the weight-scaling
experiments of Theorem 1 (``scaling``). Imports the toolkit, never the chapters or the book."""
