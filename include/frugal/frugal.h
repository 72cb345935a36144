// frugal: a training library on LibTorch with a Lightning-style Trainer. Umbrella header.
#pragma once

#include <frugal/activation_checkpoint.h>
#include <frugal/batch_size_finder.h>
#include <frugal/callback.h>
#include <frugal/callbacks/early_stopping.h>
#include <frugal/callbacks/learning_rate_monitor.h>
#include <frugal/callbacks/memory_monitor.h>
#include <frugal/callbacks/model_checkpoint.h>
#include <frugal/callbacks/progress_bar.h>
#include <frugal/callbacks/timer.h>
#include <frugal/checkpoint.h>
#include <frugal/classifier.h>
#include <frugal/data.h>
#include <frugal/datasets/mnist.h>
#include <frugal/error.h>
#include <frugal/grad_scaler.h>
#include <frugal/hash.h>
#include <frugal/loggers.h>
#include <frugal/lr_scheduler.h>
#include <frugal/metrics.h>
#include <frugal/models.h>
#include <frugal/optim.h>
#include <frugal/task.h>
#include <frugal/trainer.h>
#include <frugal/trials.h>
#include <frugal/version.h>
