// frugal: a training library on LibTorch with a Lightning-style Trainer. Umbrella header.
// (frugal/data/torch_data.h, the torch::data adapter, is left out: it pulls in <torch/data.h>.)
#pragma once

// What every user touches.
#include <frugal/callback.h>
#include <frugal/classifier.h>
#include <frugal/error.h>
#include <frugal/metrics.h>
#include <frugal/state_dict.h>
#include <frugal/task.h>
#include <frugal/trainer.h>
#include <frugal/version.h>

// Subsystems.
#include <frugal/budget/activation_checkpoint.h>
#include <frugal/budget/batch_size_finder.h>
#include <frugal/budget/cpu_memory.h>
#include <frugal/budget/trials.h>
#include <frugal/callbacks/backbone_finetuning.h>
#include <frugal/callbacks/batch_size_finder.h>
#include <frugal/callbacks/early_stopping.h>
#include <frugal/callbacks/learning_rate_monitor.h>
#include <frugal/callbacks/memory_monitor.h>
#include <frugal/callbacks/model_checkpoint.h>
#include <frugal/callbacks/model_pruning.h>
#include <frugal/callbacks/progress_bar.h>
#include <frugal/callbacks/timer.h>
#include <frugal/data/batch_source.h>
#include <frugal/data/datasets/mnist.h>
#include <frugal/data/image.h>
#include <frugal/data/image_folder.h>
#include <frugal/data/image_loader.h>
#include <frugal/data/lmdb.h>
#include <frugal/data/packed.h>
#include <frugal/data/transforms.h>
#include <frugal/deploy/onnx.h>
#include <frugal/deploy/predictor.h>
#include <frugal/deploy/quantize.h>
#include <frugal/deploy/quantized_model.h>
#include <frugal/deploy/torchscript.h>
#include <frugal/hardware/cpu_threads.h>
#include <frugal/io/checkpoint.h>
#include <frugal/io/hash.h>
#include <frugal/io/sparse_weights.h>
#include <frugal/io/weights.h>
#include <frugal/loggers/logger.h>
#include <frugal/loggers/report.h>
#include <frugal/loggers/tensorboard.h>
#include <frugal/models/channel_pruning.h>
#include <frugal/models/finetune.h>
#include <frugal/models/small.h>
#include <frugal/models/zoo.h>
#include <frugal/optim/lr_scheduler.h>
#include <frugal/optim/optimizers.h>
#include <frugal/precision/grad_scaler.h>
#include <frugal/precision/precision.h>
