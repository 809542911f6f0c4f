// amari nn: modules and layers, models with flat parameters, NLL heads, optimizers, data.
#pragma once
#include <amari/nn/dataset.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/idx.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/module.hpp>
#include <amari/nn/random.hpp>
#include <amari/nn/training.hpp>
#include <amari/nn/optim.hpp>
#include <amari/nn/serialize.hpp>
