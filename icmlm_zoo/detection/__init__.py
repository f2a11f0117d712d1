"""Hand ICMLM backbones to detection code: detectron2 export and a torchvision Faster R-CNN recipe."""
