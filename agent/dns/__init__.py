"""DNS active checks: what the stub resolver of a namespace really does, measured.

    resolvconf  reads resolv.conf the way glibc does (search, ndots, options)
    search      the names glibc's res_search tries, in order, and where it stops
    wire        query building and strict response validation (dnspython)
    exchange    UDP/TCP sockets, timeouts, TC -> TCP retry, invalid-packet counting
    stats       latency percentiles and per-name/type tallies
    race        the A/AAAA pair signature (one answered, twin lost, same port)
    probe       one probe run: rounds x candidates x A/AAAA, per mode
    settings    CLI flags / config table -> probe settings, servers, netns
    report      ECS events and table rows from a probe run
    sensor      the same probe as a daemon sensor ([sensors.dns])
"""
