"""Vision helpers: dlib detection and FFHQ alignment, the one image reader, PSNR/SSIM."""
