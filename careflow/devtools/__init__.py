"""Tools for plugin authors and careflow's own developers: hook docs and the plugin scaffold."""
