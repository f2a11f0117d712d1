# Mask R-CNN R50-FPN, 1x COCO, ICMLM backbone through mmpretrain's TIMMBackbone (mmdetection 3.x).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmpretrain.models', 'icmlm_zoo'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.TIMMBackbone',
        model_name='icmlm_resnet50.attfc_coco',
        features_only=True,
        pretrained=True,
        out_indices=(1, 2, 3, 4)),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

optim_wrapper = dict(optimizer=dict(lr=0.02))

# TIMMBackbone keeps timm's BatchNorm layers trainable (mmdet's own ResNet freezes their statistics with
# norm_eval=True); synchronise them across GPUs as the MoCo/VirTex protocol does (mmengine converts BN -> SyncBN).
sync_bn = 'torch'
