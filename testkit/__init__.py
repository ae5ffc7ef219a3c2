"""What the tests and the benchmark both use, outside the product: the oracles an
output is judged by (SSIM in numpy, the original service's ImageMagick recipe)
and the corpus of real photographs (Debian's wallpapers). Never shipped."""
