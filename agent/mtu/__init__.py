"""Path MTU probing: DF probes, search, classification, the daemon sensor.

    search.py     the search and classification (pure; probing injected)
    packets.py    probe packets crafted with scapy, answers matched to probes
    transport.py  raw sockets past the kernel's PMTU cache, adaptive timeouts
    target.py     target resolution, source address, route MTU, local addresses
    probe.py      one check start to finish (MtuOptions -> MtuReport)
    report.py     the ECS event, the verdict sentence, the table
    sensor.py     MTU targets probed on an interval by `netagent run`
"""
