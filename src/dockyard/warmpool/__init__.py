"""The warm network pool, as one component: its rows and the claim a create makes (`store`) and the loop that
keeps it filled (`pool`). The runtime's part is `Runtime.prepare_network`, which makes a workspace's network
ahead of its first start."""
