"""dcgan-pipeline: the stages of the GAN/DCGAN pipeline other than crawling."""
