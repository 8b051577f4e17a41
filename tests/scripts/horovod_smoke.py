"""Two horovod ranks over gloo: an allreduce and one DistributedOptimizer step; each rank prints JSON."""

import json

import horovod.torch as hvd
import torch

hvd.init()
total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
torch.manual_seed(hvd.rank())  # different starting weights per rank; the broadcast must make them equal
model = torch.nn.Linear(4, 1)
hvd.broadcast_parameters(model.state_dict(), root_rank=0)
opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), named_parameters=model.named_parameters())
x = torch.full((2, 4), float(hvd.rank() + 1))
loss = model(x).pow(2).mean()
loss.backward()
opt.step()
print(json.dumps({"rank": hvd.rank(), "size": hvd.size(), "sum": total,
                  "weights": [round(w, 6) for w in model.weight.detach().flatten().tolist()]}))
