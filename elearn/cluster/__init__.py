"""How the processes of an application find and watch each other, in whichever process they run:
ZooKeeper (the embedded server, the registry of nodes), addresses and peer probes, child processes,
waits with deadlines, the restart policy and log tails."""
