# gunicorn settings for the plain Flask reference server (one gevent worker).
worker_class = "gevent"
workers = 1
worker_connections = 20000  # default is 1000, too few for the 10k idle-connection scenario
timeout = 60
graceful_timeout = 5
control_socket_disable = True  # gunicorn 27's control socket is not needed here
